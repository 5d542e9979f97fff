"""RFC 3263 §4.3: a request whose target times out, cannot be reached or answers 503 goes to the next one.

In the sans-I/O core (``Net``), over real sockets between user agents located by dnsmasq on 127.0.0.1,
and one real fax from `vfax send` to a `vfax receive` named only by NAPTR and SRV.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sip.core import CallAnswered, CallFailed, CoreConfig, IncomingCall, RequestCompleted
from sip.locate import LocateError, Locator
from sip.timers import TimerValues
from sip.useragent import IncomingInvite, UserAgent
from tests import docfactory
from tests.peers import dnsmasq as dm
from tests.peers.dnsmasq import dnsmasq, host, naptr, srv
from tests.peers.kamailio import KamailioServer
from tests.serve_process import free_port, wait_for
from tests.test_cli_fax import finish, start_receiver, vfax, wait_listening
from tests.test_sip_core import SDP_A, SDP_B, Net
from vfax.status import FaxStatus

needs_dnsmasq = pytest.mark.skipif(not dm.available(), reason="dnsmasq is not installed (scripts/setup.sh)")


def run(coro_fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(*args), 60))


# --------------------------------------------------------------------------------- failover (sans-I/O)


def test_core_invite_fails_over_on_timeout_then_503_with_a_new_branch_each() -> None:
    net = Net()
    a = net.add(5061, CoreConfig(timers=TimerValues(t1=0.05)))
    busy, good = net.add(5063), net.add(5064)
    busy.core.set_unavailable(True)  # type: ignore[union-attr]
    targets = [("udp", "127.0.0.1", 5099), ("udp", "127.0.0.1", 5063), ("udp", "127.0.0.1", 5064)]
    call = a.core.invite("sip:fax@trunk.test", SDP_A, net.now, targets=targets)  # type: ignore[union-attr]
    net.pump()
    net.advance(64 * 0.05 + 0.1)  # Timer B at the dead target, then 503 from the busy one
    incoming = good.of(IncomingCall)
    assert len(incoming) == 1
    good.core.accept(incoming[0].call, SDP_B, net.now)  # type: ignore[union-attr]
    net.pump()
    assert [type(e) for e in a.events if isinstance(e, CallAnswered | CallFailed)] == [CallAnswered]
    invites = [line for _, sender, line in net.wire if sender == "5061" and line.startswith("INVITE")]
    assert len(invites) >= 3  # retransmissions to the dead one, then one each
    ladder = a.core.ladder(call.call_id)  # type: ignore[union-attr]
    notes = [line for _, d, line in ladder if d == "failover"]
    assert len(notes) == 2
    assert notes[0].startswith("408 Request Timeout from udp 127.0.0.1:5099; next udp 127.0.0.1:5063")
    assert notes[1].startswith("503 Service Unavailable from udp 127.0.0.1:5063; next udp 127.0.0.1:5064")
    assert incoming[0].request.cseq[0] == 1  # the same request, a new transaction (§4.3)
    assert call.remote == ("udp", "127.0.0.1", 5064)


def test_core_does_not_fail_over_on_other_answers_or_after_the_last_target() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    b.core.set_unavailable(True)  # type: ignore[union-attr]
    oreq = a.core.request(  # type: ignore[union-attr]
        "OPTIONS", "sip:fax@trunk.test", net.now, targets=[("udp", "127.0.0.1", 5062)]
    )
    net.pump()
    assert oreq.final is not None and oreq.final.status == 503  # no target left: the 503 is the answer
    b.core.set_unavailable(False)  # type: ignore[union-attr]
    two = [("udp", "127.0.0.1", 5062), ("udp", "127.0.0.1", 5063)]
    oreq = a.core.request("MESSAGE", "sip:fax@trunk.test", net.now, targets=two)  # type: ignore[union-attr]
    net.pump()
    assert [e.response.status for e in a.of(RequestCompleted)][-1] == 405  # an answer: no failover
    assert not [line for _, d, line in a.core.ladder(oreq.request.call_id) if d == "failover"]  # type: ignore[union-attr]


# --------------------------------------------------------------------------------- failover (sockets, DNS)


@needs_dnsmasq
def test_ua_options_and_invite_fail_over_to_the_second_srv_priority(tmp_path: Path) -> None:
    dead_udp = free_port()

    async def go() -> None:
        busy = await UserAgent.create("127.0.0.1", 0)
        good = await UserAgent.create("127.0.0.1", 0)
        busy.set_unavailable(True)

        async def answer(incoming: IncomingInvite) -> None:
            await incoming.accept(SDP_B)

        good.on_invite = answer
        records = [
            srv("_sip._udp.trunk.test", "dead.trunk.test", dead_udp, 10),
            srv("_sip._udp.trunk.test", "busy.trunk.test", busy.local_address[1], 20),
            srv("_sip._udp.trunk.test", "good.trunk.test", good.local_address[1], 30),
            host("dead.trunk.test"), host("busy.trunk.test"), host("good.trunk.test"),
        ]  # fmt: skip
        with dnsmasq(records, tmp_path / "dns.log") as server:
            caller = await UserAgent.create("127.0.0.1", 0, timers=TimerValues(t1=0.05))
            caller.locator = Locator([server])
            resp = await caller.options("sip:fax@trunk.test")
            assert resp.status == 200  # from the good one, after the dead and the busy
            assert [d for _, d, _ in caller.ladder(resp.call_id)].count("failover") == 2
            targets = await caller.locate("sip:fax@trunk.test")
            assert [t[2] for t in targets or []] == [dead_udp, busy.local_address[1], good.local_address[1]]
            result = await caller.invite("sip:fax@trunk.test", SDP_A, targets=targets)
            assert result.ok and result.session is not None
            steps = caller.ladder(result.session.call_id)
            assert [d for _, d, _ in steps].count("failover") == 2
            assert any(line.startswith("SIP/2.0 503") for _, d, line in steps if d == "in")
            await result.session.bye()
            with pytest.raises(LocateError, match=r"nosuch\.test"):
                await caller.options("sip:fax@nosuch.test")
            await caller.close()
        await busy.close()
        await good.close()

    run(go)


@needs_dnsmasq
def test_vfax_send_to_a_receiver_named_only_by_naptr_and_srv(tmp_path: Path) -> None:
    """A real fax: NAPTR prefers TCP, whose SRV target refuses connections; the call fails over to the
    UDP SRV target, a `vfax receive`, and the page is confirmed."""
    port, dead_tcp = free_port(), free_port()
    inbox = tmp_path / "inbox"
    rx = start_receiver("--listen", f"127.0.0.1:{port}", "--inbox", str(inbox), "--once", "--json")
    try:
        wait_listening(port, rx)
        records = [
            naptr("fax.test", 10, 10, "SIP+D2T", "_sip._tcp.fax.test"),
            naptr("fax.test", 20, 10, "SIP+D2U", "_sip._udp.fax.test"),
            srv("_sip._tcp.fax.test", "down.fax.test", dead_tcp, 10),
            srv("_sip._udp.fax.test", "rx.fax.test", port, 10),
            host("down.fax.test"), host("rx.fax.test"),
        ]  # fmt: skip
        doc = docfactory.text_pdf(tmp_path / "in.pdf", pages=1)
        with dnsmasq(records, tmp_path / "dns.log") as (ip, dns_port):
            dns = ["--dns", f"{ip}:{dns_port}"]
            sent = vfax("send", str(doc), "--to", "sip:fax@fax.test", *dns, "--resolution", "standard",
                        "--report", str(tmp_path / "call.json"), "--json")  # fmt: skip
            bad = vfax("send", str(doc), "--to", "sip:fax@nosuch.test", *dns, "--json")
        code, out, err = finish(rx)
    finally:
        if rx.poll() is None:
            rx.kill()
    assert sent.returncode == 0, sent.stderr
    data = json.loads(sent.stdout)
    assert data["ok"] and data["pages"] == 1 and data["status"] == "completed"
    ladder = json.loads((tmp_path / "call.json").read_text())["sip"]["ladder"]
    failover = [s["line"] for s in ladder if s["dir"] == "failover"]
    assert len(failover) == 1 and f"from tcp 127.0.0.1:{dead_tcp}; next udp 127.0.0.1:{port}" in failover[0]
    assert code == 0, err
    received = json.loads(out.strip().splitlines()[-1])
    assert received["ok"] and received["pages"] == 1
    assert bad.returncode == 2 and "nosuch.test" in bad.stderr and "NXDOMAIN" in bad.stderr
    assert json.loads(bad.stdout)["status"] == FaxStatus.FS_BAD_ADDRESS.string_id



@needs_dnsmasq
def test_vfax_receive_registers_at_kamailio_found_by_srv_after_a_dead_target(
    tmp_path: Path, kamailio: KamailioServer
) -> None:
    """`vfax receive --server pbx.test --dns ...`: NAPTR prefers TCP, whose SRV names a port that refuses
    connections; the REGISTER fails over to the UDP SRV target, Kamailio, and the binding is made. (A
    dead UDP target costs Timer F, 32 s, before the failover: UDP says nothing about a closed port.)"""
    port, dead = free_port(), free_port()
    records = [
        naptr("pbx.test", 10, 10, "SIP+D2T", "_sip._tcp.pbx.test"),
        naptr("pbx.test", 20, 10, "SIP+D2U", "_sip._udp.pbx.test"),
        srv("_sip._tcp.pbx.test", "dead.pbx.test", dead, 10),
        srv("_sip._udp.pbx.test", "kam.pbx.test", kamailio.udp_port, 10),
        host("dead.pbx.test"), host("kam.pbx.test"),
    ]  # fmt: skip
    with dnsmasq(records, tmp_path / "dns.log") as (ip, dns_port):
        rx = start_receiver("--listen", f"127.0.0.1:{port}", "--inbox", str(tmp_path / "inbox"),
                            "--server", "pbx.test", "--user", "1001", "--password", "secret1001",
                            "--dns", f"{ip}:{dns_port}")  # fmt: skip
        try:
            wait_listening(port, rx)
            contacts = wait_for(lambda: kamailio.registered_contacts("1001"), 20, "1001 registered")
        finally:
            rx.terminate()
            rx.wait(20)
    assert contacts == [f"sip:1001@127.0.0.1:{port}"]
