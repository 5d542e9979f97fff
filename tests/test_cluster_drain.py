"""Drain mode for rolling upgrades (issue 13): a drained node claims no new job and answers new calls
and OPTIONS 503 while its calls in progress finish; resumed, it takes work again.

Real processes on 127.0.0.1: two `vfax serve` nodes on one PostgreSQL database (tests/serve_process.py),
a far end `vfax receive`, the CLI `vfax nodes drain --wait`, our own SIP user agent for the OPTIONS and
INVITE checks, and Kamailio running lab/cluster/kamailio.cfg for the dispatcher's view. Waits are bounded
and wait for states (heartbeats, job states, the dispatcher's flags), never for a duration.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sip.useragent import UserAgent
from tests import docfactory
from tests.peers.kamailio_dispatcher import DispatcherServer
from tests.serve_process import Receiver, ServeProcess, free_port, spawn, vfax_argv, wait_for, write_config

TOKEN = "cluster-drain-test-token"
SEND_TIMEOUT = 120  # a 1-page fax takes about 20 s; a few run at once on a shared machine
SDP = (
    b"v=0\r\no=drain 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


class Node(ServeProcess):
    """One `vfax serve` (one process) with its node id, API and SIP port on 127.0.0.1."""

    def __init__(self, tmp: Path, node_id: str, database: str | None, *, channels: int = 2) -> None:
        self.node_id = node_id
        self.api_port = free_port()
        self.sip_port = free_port(socket.SOCK_DGRAM)
        api = f"127.0.0.1:{self.api_port}"
        config = write_config(
            tmp / node_id, api=api, token=TOKEN, database=database, inbox=tmp / node_id / "inbox",
            retry={"max_attempts": 1},
            service={"lease_seconds": 6, "heartbeat_seconds": 0.5, "give_up_seconds": 3},
            device={"listen": self.target, "transports": ["udp"], "channels": channels, "media_timeout": 10},
        )  # fmt: skip
        super().__init__(node_id, config, api, TOKEN, env={"VFAX_WORKERS": "1", "VFAX_NODE_ID": node_id})

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    def record(self, node_id: str | None = None) -> dict[str, Any]:
        """A node's record as this node's API lists it (itself by default)."""
        nodes = {n["id"]: n for n in self.get("/v1/nodes")["nodes"]}
        return dict(nodes[node_id or self.node_id])

    def post(self, path: str) -> dict[str, Any]:
        r = self.client.post(path)
        assert r.status_code == 200, r.text
        return dict(r.json())


class Made:
    """Everything the test started, for its failure report and teardown."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.others: list[Any] = []
        self.logs: list[Path] = []

    def failure_report(self) -> list[tuple[str, str]]:
        sections = [s for node in self.nodes for s in node.failure_report()]
        sections += [s for other in self.others for s in other.failure_report()]
        for log in self.logs:
            if log.exists():
                sections.append((log.name, log.read_text(errors="replace")[-4000:]))
        return sections

    def close(self) -> None:
        for other in self.others:
            other.close()
        for node in self.nodes:
            node.stop()


@pytest.fixture
def made() -> Iterator[Made]:
    m = Made()
    try:
        yield m
    finally:
        m.close()


def start_nodes(made: Made, tmp: Path, database: Callable[[str], str | None], *ids: str) -> list[Node]:
    nodes = [Node(tmp, node_id, database(node_id)) for node_id in ids]
    made.nodes += nodes
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_healthy()
    return nodes


def sip(coro: Callable[[UserAgent], Any]) -> Any:
    """Run ``coro(ua)`` with a fresh SIP user agent on 127.0.0.1 (UDP)."""

    async def main() -> Any:
        ua = await UserAgent.create("127.0.0.1", 0, ("udp",))
        try:
            return await coro(ua)
        finally:
            await ua.close()

    return asyncio.run(main())


def options(node: Node) -> tuple[int, str | None]:
    """OPTIONS to the node's device: the status and Retry-After."""

    async def probe(ua: UserAgent) -> tuple[int, str | None]:
        resp = await ua.options(f"sip:{node.target}")
        return resp.status, resp.headers.get("Retry-After")

    return sip(probe)  # type: ignore[no-any-return]


def heartbeats(node: Node, count: int) -> None:
    """Return once ``node``'s heartbeat was seen to advance ``count`` times (it ran that many loops)."""
    seen = [node.record()["heartbeat_at"]]

    def advanced() -> bool:
        now = node.record()["heartbeat_at"]
        if now != seen[-1]:
            seen.append(now)
        return len(seen) > count

    wait_for(advanced, 30, f"{node.node_id}: heartbeat did not advance {count} times")


def terminal(node: Node, job_id: str) -> list[dict[str, Any]]:
    return [e for e in node.get(f"/v1/jobs/{job_id}")["events"] if e["terminal"]]


def test_drain_lets_the_call_finish_claims_nothing_refuses_calls_and_resume_takes_work_again(
    tmp_path: Path, postgres: Any, made: Made
) -> None:
    far = Receiver("127.0.0.1", tmp_path)
    made.others.append(far)
    a, b = start_nodes(made, tmp_path, lambda _: postgres.url, "node-a", "node-b")
    doc = docfactory.text_pdf(tmp_path / "one-page.pdf", pages=1)

    # B drained through A's API: the mark is in the store; B follows it at its next heartbeat
    assert a.post("/v1/nodes/node-b/drain")["draining"] is True
    wait_for(lambda: a.record("node-b")["drained"], 20, "node-b never drained")
    assert options(b) == (503, "60")

    # A alone sends job 1; while its call is on the line, drain A with the CLI (through A's own API:
    # applied at once) and wait for it in the background
    job1 = a.submit(doc, far.uri)
    wait_for(lambda: any(c["id"] == job1 and c["kind"] == "send" for c in a.record()["calls"]), 30,
             "job 1 is not on A's line")  # fmt: skip
    waited = tmp_path / "drain-wait.json"
    made.logs.append(tmp_path / "drain-wait.log")
    cli = spawn(vfax_argv("nodes", "drain", "node-a", "--wait", "--timeout", "120", "--json",
                          "--api", f"http://127.0.0.1:{a.api_port}", "--token", TOKEN),
                tmp_path / "drain-wait.log", out=waited)  # fmt: skip
    wait_for(lambda: a.record()["draining"], 20, "node-a not marked draining")
    sent_by_a = time.monotonic()

    # A is draining and has a free channel: two jobs queued now stay queued (B is drained too) ...
    job2, job3 = a.submit(doc, far.uri), a.submit(doc, far.uri)
    heartbeats(a, 3)  # A woke on the submits (NOTIFY) and ran three more loops: it would have claimed
    assert [a.get(f"/v1/jobs/{j}")["state"] for j in (job2, job3)] == ["queued", "queued"]
    # ... and new calls to A are refused (INVITE and OPTIONS 503): a dispatcher would try another node
    assert options(a) == (503, "60")

    async def invite(ua: UserAgent) -> tuple[int, str | None]:
        result = await ua.invite(f"sip:fax@{a.target}", SDP, timeout=10)
        if result.session is not None:
            await result.session.bye()
        assert result.response is not None
        return result.status, result.response.headers.get("Retry-After")

    assert sip(invite) == (503, "60")

    # B resumed: it sends the queued jobs; A's call goes on meanwhile
    assert a.post("/v1/nodes/node-b/resume")["draining"] is False
    wait_for(lambda: options(b)[0] == 200, 20, "node-b did not resume")

    # the CLI returns once A has no call left, and says so
    assert cli.wait(SEND_TIMEOUT) == 0, (tmp_path / "drain-wait.log").read_text()
    print(f"\nvfax nodes drain --wait returned {time.monotonic() - sent_by_a:.1f} s after the drain")
    [record] = json.loads(waited.read_text())["nodes"]
    assert record["id"] == "node-a" and record["drained"] is True and record["calls"] == []

    done1 = a.final(job1, SEND_TIMEOUT)
    assert done1["state"] == "completed", done1
    [end1] = terminal(a, job1)
    assert end1["status"] == "completed" and end1["payload"]["node"] == "node-a"
    for job in (job2, job3):
        done = b.final(job, SEND_TIMEOUT)
        assert done["state"] == "completed", done
        [end] = terminal(b, job)
        assert end["payload"]["node"] == "node-b", end  # A claimed none of them
    wait_for(lambda: len(far.complete()) == 3, 30, f"the far end has {len(far.complete())} faxes, not 3")
    assert far.partial() == []

    # A resumed through B's API (A follows at its next heartbeat); with B drained, A takes job 4
    assert b.post("/v1/nodes/node-a/resume")["draining"] is False
    wait_for(lambda: options(a)[0] == 200, 20, "node-a did not take calls again")
    b.post("/v1/nodes/node-b/drain")
    job4 = b.submit(doc, far.uri)
    wait_for(lambda: any(c["id"] == job4 for c in a.record()["calls"]), 30, "node-a did not claim job 4")
    b.client.post(f"/v1/jobs/{job4}/cancel")  # no need to send it whole
    b.final(job4, SEND_TIMEOUT)
    assert [e["payload"]["node"] for e in terminal(b, job4)] == ["node-a"]


def test_the_dispatcher_routes_around_a_drained_node_and_takes_it_back(
    tmp_path: Path, kamailio_dispatcher: Any, made: Made
) -> None:
    a, b = start_nodes(made, tmp_path, lambda _: None, "node-a", "node-b")  # each its own SQLite store
    port = free_port(socket.SOCK_DGRAM)
    ds: DispatcherServer = kamailio_dispatcher(
        host="127.0.0.1", udp_port=port, nodes=[a.target, b.target], pbxs=[f"127.0.0.1:{free_port()}"]
    )
    wait_for(lambda: ds.is_active(a.target) and ds.is_active(b.target), 20,
             f"not both nodes active: {ds.destinations()}")  # fmt: skip

    drained_at = time.time()
    a.post("/v1/nodes/node-a/drain")
    # two 503 answers to its probes in a row (DS_PROBING_THRESHOLD) make it inactive ("T": one so far)
    down = wait_for(lambda: [e for e in ds.events() if e.uri == f"sip:{a.target}" and e.state == "DOWN"], 30,
                    "node-a not taken out")  # fmt: skip
    assert ds.destinations()[f"sip:{a.target}"].startswith("I"), ds.destinations()
    print(f"\nnode-a out of rotation {down[-1].at - drained_at:.1f} s after the drain")
    assert ds.is_active(b.target)

    # a call to the one dispatcher address now goes to B
    async def call(ua: UserAgent) -> tuple[int, str]:
        pending = ua.invite(f"sip:fax@127.0.0.1:{port}", SDP, timeout=10)
        result = await pending
        if result.session is not None:
            await result.session.bye()
        return result.status, pending.call_id

    status, call_id = sip(call)
    assert ds.destinations()[f"sip:{a.target}"].startswith("I"), ds.destinations()  # probes keep it out
    assert status == 200 and ds.routed_to(call_id) == [f"sip:{b.target}"], ds.routed_to(call_id)

    resumed_at = time.time()
    a.post("/v1/nodes/node-a/resume")
    wait_for(lambda: ds.is_active(a.target), 30, f"node-a not active again: {ds.destinations()}")
    up = [e for e in ds.events() if e.uri == f"sip:{a.target}" and e.state == "UP"]
    assert up and up[-1].at >= down[-1].at, ds.events()
    print(f"node-a back in rotation {up[-1].at - resumed_at:.1f} s after the resume")
