"""vfax behind a real NAT (issue 14, item 1): a LAN namespace behind a router namespace that masquerades
with random ports (tests/peers/natnet.py), Kamailio on the public side with a plain registrar (it stores
the Contact it is given: no nathelper, so only vfax's own RFC 3581 handling makes calls reach it).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sip.useragent import UserAgent
from tests import docfactory
from tests.peers.kamailio import KamailioServer, find_kamailio
from tests.peers.natnet import NatNetwork, nat_unavailable
from tests.serve_process import ROOT, Receiver, spawn, stop_process, vfax_argv, wait_for

pytestmark = [
    pytest.mark.skipif(nat_unavailable() is not None, reason=f"no NAT here: {nat_unavailable()}"),
    pytest.mark.skipif(find_kamailio() is None, reason="kamailio is not installed"),
]


@pytest.fixture
def nat() -> Iterator[NatNetwork]:
    with NatNetwork() as network:
        yield network


@pytest.fixture
def registrar(nat: NatNetwork, tmp_path: Path) -> Iterator[KamailioServer]:
    """Kamailio on the public side; requests from the test process itself are not challenged."""
    server = KamailioServer(tmp_path / "kamailio", host=nat.gateway, trusted=[nat.gateway]).start()
    try:
        yield server
    finally:
        server.stop()


def _contact(kamailio: KamailioServer, user: str) -> tuple[str, int] | None:
    contacts = kamailio.registered_contacts(user)
    if len(contacts) != 1:
        return None
    match = re.fullmatch(r"sip:[^@]+@([0-9.]+):(\d+)(;.*)?", contacts[0])
    assert match, contacts
    return match.group(1), int(match.group(2))


def _options(gateway: str, uri: str) -> int:
    """OPTIONS from the public side to ``uri`` through Kamailio: the registered Contact must reach vfax."""

    async def go() -> int:
        ua = await UserAgent.create(gateway, 0, ("udp",))
        try:
            return (await asyncio.wait_for(ua.options(uri), 20)).status
        finally:
            await ua.close()

    return asyncio.run(go())


def test_registration_behind_nat_learns_the_public_address_and_follows_a_new_binding(
    nat: NatNetwork, registrar: KamailioServer, tmp_path: Path
) -> None:
    """The Contact registered is the router's address and the port it mapped, not the LAN's; when the router
    forgets the mapping, the next keep-alive's answer shows the new port and vfax registers it at once, the
    stale Contact removed, so calls reach it again."""
    kamailio_at = f"{registrar.host}:{registrar.udp_port}"
    argv = vfax_argv(
        "receive", "--listen", f"{nat.lan.address}:5060", "--inbox", str(tmp_path / "inbox"),
        "--server", kamailio_at, "--user", "1001", "--password", "secret1001", "--keepalive", "2",
    )  # fmt: skip
    log = tmp_path / "receive.log"
    proc = spawn(nat.lan.wrap(argv), log)
    try:
        first = wait_for(lambda: _contact(registrar, "1001"), 30, f"one Contact for 1001\n{nat.describe()}")
        assert first[0] == nat.public and first[1] != 5060, (first, registrar.registered_contacts("1001"))
        assert _options(nat.gateway, f"sip:1001@{kamailio_at}") == 200

        nat.flush()  # the router forgets: the next keep-alive goes out on a new public port
        second = wait_for(
            lambda: (c := _contact(registrar, "1001")) and c != first and c,
            30, f"a new Contact after the NAT binding changed\n{nat.describe()}",
        )  # fmt: skip
        assert second[0] == nat.public and second[1] != first[1]
        assert registrar.registered_contacts("1001") == [f"sip:1001@{second[0]}:{second[1]}"]
        assert _options(nat.gateway, f"sip:1001@{kamailio_at}") == 200
    finally:
        stop_process(proc, 15)


@pytest.fixture
def forwarding() -> Iterator[NatNetwork]:
    with NatNetwork(forward_all=True) as network:
        yield network


def test_advertised_address_behind_a_forwarding_router_is_what_peers_use(
    forwarding: NatNetwork, tmp_path: Path
) -> None:
    """`--advertise` names the router's address in Via, Contact and SDP: the registrar keeps it as given
    (no rewrite), and a G.711 fax from the public side reaches the LAN through the forwarded ports."""
    nat = forwarding
    registrar = KamailioServer(tmp_path / "kamailio", host=nat.gateway).start()
    kamailio_at = f"{registrar.host}:{registrar.udp_port}"
    rx_argv = vfax_argv(
        "receive", "--listen", f"{nat.lan.address}:5060", "--inbox", str(tmp_path / "inbox"), "--once",
        "--json", "--server", kamailio_at, "--user", "1001", "--password", "secret1001",
        "--advertise", f"{nat.public}:5060",
    )  # fmt: skip
    out = tmp_path / "rx.json"
    rx = spawn(nat.lan.wrap(rx_argv), tmp_path / "rx.log", out=out)
    try:
        wait_for(lambda: _contact(registrar, "1001"), 30, f"a Contact for 1001\n{nat.describe()}")
        assert registrar.registered_contacts("1001") == [f"sip:1001@{nat.public}:5060"]
        doc = docfactory.text_pdf(tmp_path / "in.pdf", pages=1)
        sent = subprocess.run(
            vfax_argv(
                "send", str(doc), "--to", f"sip:1001@{kamailio_at}", "--server", kamailio_at,
                "--user", "1002", "--password", "secret1002", "--listen", f"{nat.gateway}:0", "--t38", "off",
                "--resolution", "standard", "--report", str(tmp_path / "call.json"), "--json",
            ),
            capture_output=True, text=True, timeout=120, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )  # fmt: skip
        assert sent.returncode == 0, (sent.stdout, sent.stderr, (tmp_path / "rx.log").read_text())
        assert json.loads(sent.stdout)["pages"] == 1
        rx.wait(30)
        received = json.loads(out.read_text().strip().splitlines()[-1])
        assert received["ok"] and received["pages"] == 1
        report = json.loads((tmp_path / "call.json").read_text())
        answers = [s["line"] for s in report["sip"]["ladder"] if s["dir"] == "in"]
        assert any(a.startswith("SIP/2.0 200") for a in answers)
        assert report["rtp"]["remote_addr"][0] == nat.public, report["rtp"]
    finally:
        stop_process(rx, 15)
        registrar.stop()


def _send(nat_side_wrap: Callable[[list[str]], list[str]], doc: Path, to: str, kamailio_at: str, user: str,
          listen: str, report: Path, *extra: str) -> subprocess.Popen[str]:  # fmt: skip
    argv = vfax_argv(
        "send", str(doc), "--to", to, "--server", kamailio_at, "--user", user, "--password", f"secret{user}",
        "--listen", listen, "--resolution", "standard", "--report", str(report), "--json", *extra,
    )  # fmt: skip
    return subprocess.Popen(
        nat_side_wrap(argv), cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def test_faxes_both_ways_through_a_masquerading_nat_in_t38_and_g711(
    nat: NatNetwork, registrar: KamailioServer, tmp_path: Path
) -> None:
    """Four real faxes at once through a NAT that gives random ports and a registrar that stores Contacts
    as given: public → LAN and LAN → public, each in G.711 and in T.38. The LAN side is reachable only
    through the Contact it learned (RFC 3581); its media, which comes from the router's address and not
    from the private one in its SDP, is found by the public side's symmetric media (learned, not SDP)."""
    kamailio_at = f"{registrar.host}:{registrar.udp_port}"
    rx_lan = Receiver(nat.lan.address, tmp_path, name="lan", port=5060, wrap=nat.lan.wrap, options=(
        "--server", kamailio_at, "--user", "1001", "--password", "secret1001", "--keepalive", "5"))
    rx_pub = Receiver(nat.gateway, tmp_path, name="pub", options=(
        "--server", kamailio_at, "--user", "1002", "--password", "secret1002"))
    senders: dict[str, subprocess.Popen[str]] = {}
    try:
        wait_for(lambda: _contact(registrar, "1001") and _contact(registrar, "1002"), 30,
                 f"both receivers registered\n{nat.describe()}")  # fmt: skip
        assert _contact(registrar, "1001")[0] == nat.public  # type: ignore[index]
        doc = docfactory.text_pdf(tmp_path / "in.pdf", pages=1)
        to_lan, to_pub = f"sip:1001@{kamailio_at}", f"sip:1002@{kamailio_at}"
        same = list  # the public side runs in the test's own namespace
        senders = {
            "in-g711": _send(same, doc, to_lan, kamailio_at, "1002", f"{nat.gateway}:0",
                             tmp_path / "in-g711.json", "--t38", "off"),
            # T.38 in the first INVITE here (direct); the other way the receiver's re-INVITE to T.38
            # crosses the NAT (auto)
            "in-t38": _send(same, doc, to_lan, kamailio_at, "1002", f"{nat.gateway}:0",
                            tmp_path / "in-t38.json", "--t38", "direct"),
            "out-g711": _send(nat.lan.wrap, doc, to_pub, kamailio_at, "1003", f"{nat.lan.address}:0",
                              tmp_path / "out-g711.json", "--register", "--t38", "off"),
            "out-t38": _send(nat.lan.wrap, doc, to_pub, kamailio_at, "1004", f"{nat.lan.address}:0",
                             tmp_path / "out-t38.json", "--register"),
        }  # fmt: skip
        results = {name: proc.communicate(timeout=180) for name, proc in senders.items()}
        for name, (out, err) in results.items():
            assert senders[name].returncode == 0, (name, out, err, nat.describe())
            data = json.loads(out)
            media = json.loads((tmp_path / f"{name}.json").read_text()).get("media")
            assert data["ok"] and data["pages"] == 1, (name, data, media)
            wanted = "g711" if name.endswith("g711") else "t38"
            assert data["media"] == wanted, (name, data, media, rx_lan.calls(), rx_pub.calls())
        for name in ("in-g711", "in-t38"):  # the public sender learned where the LAN's media comes from
            report = json.loads((tmp_path / f"{name}.json").read_text())
            latch = (report["rtp"] if name == "in-g711" else report["udptl"])["latch"]
            assert latch["learned_by"] == "latched" and latch["learned_addr"][0] == nat.public, (name, latch)
        wait_for(lambda: len(rx_lan.complete()) == 2 and len(rx_pub.complete()) == 2, 30,
                 "two complete faxes in each inbox")  # fmt: skip
    finally:
        for proc in senders.values():
            if proc.poll() is None:
                proc.kill()
        rx_lan.close()
        rx_pub.close()
