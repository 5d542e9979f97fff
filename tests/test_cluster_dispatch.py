"""Kamailio's dispatcher in front of three vfax nodes (issue 13, item 3), with lab/cluster/kamailio.cfg.

Real processes on a private network the test makes (tests/peers/netns.py: one namespace per host,
else 127.0.0.x): three `vfax serve` nodes whose device accepts INVITEs only from the dispatcher, the
dispatcher (the lab config, only addresses overridden), a "PBX" side in the test's own namespace that
places faxes with `vfax send` to the one dispatcher address and receives the nodes' outbound fax with
`vfax receive`. Faxes are counted in each node's inbox; the dispatcher's view comes from
`kamcmd dispatcher.list` and its log. Waits are bounded; durations are printed, never asserted.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import docfactory
from tests.peers.kamailio import _die_with_parent
from tests.peers.kamailio_dispatcher import DispatcherServer, sip_probe
from tests.peers.netns import Host, TestNetwork
from tests.serve_process import Receiver, ServeProcess, spawn, vfax_argv, wait_for, write_config

TOKEN = "cluster-dispatch-test-token"
NODES = ("node1", "node2", "node3")
SEND_TIMEOUT = 120  # one 1-page fax takes about 20 s; several run at once on a shared machine


class Node(ServeProcess):
    """One `vfax serve` on its own host: a device that takes INVITEs only from ``dispatcher_ip`` and
    sends through the dispatcher (``server``), an API on the host's address."""

    def __init__(self, host: Host, root: Path, dispatcher: tuple[str, int]) -> None:
        self.host = host
        self.sip_port = host.port(5060)
        api = f"{host.address}:{host.port(8025)}"
        self.inbox = root / "inbox"
        device = {"listen": self.target, "transports": ["udp"], "server": f"{dispatcher[0]}:{dispatcher[1]}",
                  "channels": 4, "allow_invite_from": [dispatcher[0]], "media_timeout": 10}  # fmt: skip
        config = write_config(root, api=api, token=TOKEN, inbox=self.inbox, retry={"max_attempts": 1},
                              device=device)  # fmt: skip
        super().__init__(host.name, config, api, TOKEN, wrap=host.wrap)

    @property
    def target(self) -> str:
        return f"{self.host.address}:{self.sip_port}"

    def faxes(self) -> list[Path]:
        """Faxes this node received whole (T.30 phase E confirmed: the inbox keeps no '-partial' name)."""
        return sorted(p for p in self.inbox.glob("fax-*.tif") if "-partial" not in p.name)


class Cluster:
    """What the test made, for its failure report and its teardown."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.others: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def failure_report(self) -> list[tuple[str, str]]:
        sections = [s for node in self.nodes.values() for s in node.failure_report()]
        for log in self.logs:
            with contextlib.suppress(OSError):
                sections.append((log.name, log.read_text(errors="replace")[-4000:]))
        return sections

    def close(self) -> None:
        for proc in self.others:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for node in self.nodes.values():
            node.stop()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    made = Cluster()
    try:
        yield made
    finally:
        made.close()


Sending = list[tuple[subprocess.Popen[bytes], Path]]


def send_faxes(cluster: Cluster, doc: Path, to: str, source: Host | str, logdir: Path, count: int,
               tag: str) -> Sending:  # fmt: skip
    """Start ``count`` `vfax send --json` processes at once, from ``source`` (a Host, or the test's own
    address on the network); each writes its JSON line to <logdir>/<tag>-<i>.json."""
    procs = []
    for i in range(count):
        out = logdir / f"{tag}-{i}.json"
        listen = f"{source}:0" if isinstance(source, str) else f"{source.address}:0"
        argv = vfax_argv("send", str(doc), "--to", to, "--listen", listen, "--resolution", "standard",
                         "--json")  # fmt: skip
        if isinstance(source, Host):
            argv = source.wrap(argv)
        proc = spawn(argv, logdir / f"{tag}-{i}.log", out=out)
        cluster.others.append(proc)
        cluster.logs.append(logdir / f"{tag}-{i}.log")
        procs.append((proc, out))
    return procs


def results(procs: Sending) -> list[dict[str, Any]]:
    """Each sender's JSON outcome, once it exited (bounded wait)."""
    outcomes = []
    for proc, out in procs:
        try:
            proc.wait(SEND_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        text = out.read_text().strip()
        outcomes.append(json.loads(text.splitlines()[-1]) if text else {"ok": False, "reason": "no output"})
    return outcomes


def counts(cluster: Cluster) -> dict[str, int]:
    return {name: len(node.faxes()) for name, node in cluster.nodes.items()}


def counts_when(cluster: Cluster, total: int) -> dict[str, int]:
    """Faxes per node once ``total`` are in the inboxes: a node files a fax just after the call ends,
    so the sender may have exited a moment before (bounded wait; more than ``total`` is returned too)."""
    wait_for(lambda: sum(counts(cluster).values()) >= total, 30, f"not {total} faxes: {counts(cluster)}")
    return counts(cluster)


def test_dispatcher_spreads_calls_routes_around_a_dead_node_and_takes_it_back(
    tmp_path: Path, test_network: Any, kamailio_dispatcher: Any, cluster: Cluster
) -> None:
    net: TestNetwork = test_network(["kam", *NODES, "stranger"])
    print(f"\ntest network: {net.mode}" + (f" ({net.reason})" if net.reason else f" {net.subnet}"))
    kam_host = net["kam"]
    kam_port = kam_host.port(5060)
    doc = docfactory.text_pdf(tmp_path / "one-page.pdf", pages=1)
    logs = tmp_path / "calls"
    logs.mkdir()

    # The "PBX" is the test's own address: it places calls (vfax send) and takes the nodes' outbound
    # faxes (vfax receive on a port of its own).
    pbx = Receiver(net.gateway, tmp_path, name="pbx")
    cluster.others.append(pbx.proc)
    cluster.logs += [pbx.log, pbx.out]

    for name in NODES:
        cluster.nodes[name] = Node(net[name], tmp_path / name, (kam_host.address, kam_port))
    for node in cluster.nodes.values():
        node.start()
    ds: DispatcherServer = kamailio_dispatcher(
        host=kam_host.address, udp_port=kam_port, prefix=kam_host.wrap([]),
        nodes=[n.target for n in cluster.nodes.values()], pbxs=[f"{net.gateway}:{pbx.port}"],
        probe_from=net.gateway,
    )  # fmt: skip
    node_uri = {name: f"sip:{node.target}" for name, node in cluster.nodes.items()}
    wait_for(lambda: all(ds.destinations().get(uri, "").startswith("A") for uri in node_uri.values()), 20,
             f"not every node active: {ds.destinations()}")  # fmt: skip
    fax_to = f"sip:fax@{kam_host.address}:{kam_port}"
    assert sip_probe(net.gateway, kam_host.address, kam_port) == 200  # up: nodes are active

    # 1. Six faxes from the PBX to the one dispatcher address, at once; meanwhile an INVITE straight to
    #    a node (refused by its allow-list), one from a stranger to the dispatcher (refused there), and
    #    an outbound fax queued on node2 that leaves through the dispatcher to the PBX.
    spread = send_faxes(cluster, doc, fax_to, net.gateway, logs, 6, "spread")
    node1_to = f"sip:fax@{cluster.nodes['node1'].target}"
    direct = send_faxes(cluster, doc, node1_to, net.gateway, logs, 1, "direct")
    stranger = send_faxes(cluster, doc, fax_to, net["stranger"], logs, 1, "stranger")
    with doc.open("rb") as f:
        r = cluster.nodes["node2"].client.post(
            "/v1/jobs", data={"to": "4000", "resolution": "standard"},
            files={"document": ("doc.pdf", f, "application/pdf")},
        )  # fmt: skip
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]

    [refused] = results(direct)
    assert not refused["ok"] and refused.get("sip_status") == 403, refused
    [unknown] = results(stranger)
    assert not unknown["ok"] and unknown.get("sip_status") == 403, unknown
    outcomes = results(spread)
    assert all(o["ok"] for o in outcomes), outcomes
    after_spread = counts_when(cluster, 6)
    print(f"spread of 6 faxes: {after_spread}; media {sorted({o.get('media') for o in outcomes})}")
    assert sum(after_spread.values()) == 6, after_spread
    assert all(n >= 1 for n in after_spread.values()), after_spread

    def job_done() -> Any:
        job = cluster.nodes["node2"].client.get(f"/v1/jobs/{job_id}").json()
        return job if job["state"] in ("completed", "failed") else None

    job = wait_for(job_done, SEND_TIMEOUT, "the outbound job did not finish")
    assert job["state"] == "completed", job
    assert len(pbx.complete()) == 1
    assert "outbound INVITE" in ds.log_text()

    # 2. kill -9 node3: OPTIONS probing takes it out; new calls reach only node1 and node2.
    killed_at = time.time()
    cluster.nodes["node3"].kill9()
    wait_for(lambda: ds.destinations().get(node_uri["node3"], "").startswith("I"), 30,
             "node3 not inactive in dispatcher.list")  # fmt: skip
    down = [e for e in ds.events() if e.uri == node_uri["node3"] and e.state == "DOWN" and e.at >= killed_at]
    if down:
        print(f"node3 marked inactive {down[0].at - killed_at:.1f} s after kill -9 (Kamailio log)")
    before = counts(cluster)
    outcomes = results(send_faxes(cluster, doc, fax_to, net.gateway, logs, 3, "after-kill"))
    assert all(o["ok"] for o in outcomes), outcomes
    after_kill = counts_when(cluster, sum(before.values()) + 3)
    print(f"3 faxes with node3 dead: {after_kill}")
    assert after_kill["node3"] == before["node3"]
    assert after_kill["node1"] + after_kill["node2"] == before["node1"] + before["node2"] + 3

    # 3. node3 back: probing puts it back. Then kill -9 node1 and call at once, before probing notices:
    #    a call sent to node1 fails over to the next node; node3 takes calls again.
    restarted_at = time.time()
    cluster.nodes["node3"].start()
    wait_for(lambda: ds.is_active(cluster.nodes["node3"].target), 30, "node3 not put back")
    up = [e for e in ds.events() if e.uri == node_uri["node3"] and e.state == "UP" and e.at >= killed_at]
    if up:
        print(f"node3 active again {up[0].at - restarted_at:.1f} s after its restart began (Kamailio log)")
    before = counts(cluster)
    cluster.nodes["node1"].kill9()
    outcomes = results(send_faxes(cluster, doc, fax_to, net.gateway, logs, 3, "failover"))
    assert all(o["ok"] for o in outcomes), outcomes
    after = counts_when(cluster, sum(before.values()) + 3)
    print(f"3 faxes with node1 just killed: {after}")
    assert after["node1"] == before["node1"]
    assert after["node3"] >= before["node3"] + 1
    assert sum(after.values()) == sum(before.values()) + 3
    for outcome in outcomes:
        hops = ds.routed_to(outcome["call_id"])
        if hops and hops[0] == node_uri["node1"]:
            assert len(hops) >= 2 and hops[-1] != node_uri["node1"], hops
            print(f"call {outcome['call_id']} failed over: {hops}")

    # 4. No node left: the proxy says so (OPTIONS to it: 503), as a monitoring check would see.
    last_kill = time.time()
    cluster.nodes["node2"].kill9()
    cluster.nodes["node3"].kill9()
    wait_for(lambda: all(ds.destinations()[uri].startswith("I") for uri in node_uri.values()), 30,
             f"nodes not all inactive: {ds.destinations()}")  # fmt: skip
    for name in ("node2", "node3"):
        down = [e for e in ds.events() if e.uri == node_uri[name] and e.state == "DOWN" and e.at >= last_kill]
        if down:
            print(f"{name} marked inactive {down[0].at - last_kill:.1f} s after kill -9 (Kamailio log)")
    assert sip_probe(net.gateway, kam_host.address, kam_port) == 503


def _echo(net: TestNetwork, host: Host, port: int, payload: bytes) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((net.gateway, 0))
        sock.settimeout(0.5)
        sock.sendto(payload, (host.address, port))
        try:
            return sock.recvfrom(100)[0]
        except (TimeoutError, ConnectionRefusedError):
            return None


def test_test_network_reaches_hosts_cuts_one_off_and_leaves_nothing_behind(test_network: Any) -> None:
    """The network helper itself: the test reaches a host, a cut host is unreachable until restored, and
    closing removes every namespace and link it made."""
    net: TestNetwork = test_network(["alpha", "beta"])
    beta = net["beta"]
    port = beta.port(7000)
    echo = subprocess.Popen(beta.wrap([sys.executable, "-c", (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"s.bind(({beta.address!r}, {port}))\n"
        "while True:\n"
        "    data, peer = s.recvfrom(100)\n"
        "    s.sendto(data, peer)\n"
    )]), start_new_session=True, preexec_fn=_die_with_parent)  # fmt: skip
    try:
        wait_for(lambda: _echo(net, beta, port, b"hello") == b"hello", 10, "no echo from beta")
        net.cut("beta", pids=[echo.pid])
        assert _echo(net, beta, port, b"cut") is None
        net.restore("beta")
        wait_for(lambda: _echo(net, beta, port, b"back") == b"back", 10, "no echo after restore")
    finally:
        echo.kill()
        echo.wait(10)
    made = [h.netns for h in net.hosts.values() if h.netns]
    net.close()
    if made:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
        assert not any(name in listed.split() for name in made), listed
