"""Many jobs submitted through two nodes' APIs at once (issue 13): each job is sent exactly once and has
exactly one terminal event.

Real processes, real calls, real T.30 on 127.0.0.1, nothing faked: two `vfax serve` nodes (one process
each) on one PostgreSQL database, each with one device of many channels that offers T.38 in its first
INVITE (``t38 = "direct"``: no software modem, the cheapest media on CPU); the far ends are
`vfax receive --json` processes that write one JSON line per call that ended. One-page jobs are
submitted from threads, half through each node's API, all at once.

A received fax is tied to its job by the SIP Call-ID: the job's ``dialing`` event names the Call-ID of
the call it placed, the far end's line names the Call-ID it answered. Alone on a 2-core machine the
1,000 jobs take about 2 minutes (2 x 100 channels: a call lasts ~15 s, the submissions ~30 s). Waits are
bounded; durations are printed, never asserted.
"""

from __future__ import annotations

import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests import docfactory
from tests.serve_process import Receiver, ServeProcess, free_port, wait_for, write_config

TOKEN = "cluster-load-test-token"
JOBS = 1000
CHANNELS = 100  # per node: 200 calls at once in all
RECEIVERS = 2
_CLAIM_RE = re.compile(r"job (\S+) claimed by node (\S+) \(device line1, attempt (\d+)\)")


class Node(ServeProcess):
    """One `vfax serve --workers 1` on 127.0.0.1 with node id ``name`` and one T.38 device."""

    def __init__(self, root: Path, name: str, database: str) -> None:
        api = f"127.0.0.1:{free_port()}"
        config = write_config(
            root, api=api, token=TOKEN, database=database,
            retry={"max_attempts": 3, "backoff": [1], "jitter": 0},
            service={"node_id": name},
            device={"listen": f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}", "transports": ["udp"],
                    "channels": CHANNELS, "t38": "direct", "media_timeout": 10},
        )  # fmt: skip
        super().__init__(name, config, api, TOKEN, args=["--workers", "1"], client_timeout=60)

    def claims(self) -> list[tuple[str, str, int]]:
        """(job id, node id, attempt) of every claim this node logged."""
        return [(m[1], m[2], int(m[3])) for m in _CLAIM_RE.finditer(self.output())]


class Load:
    """The nodes and far ends a test made: failure report and teardown."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.receivers: list[Receiver] = []

    def failure_report(self) -> list[tuple[str, str]]:
        return [s for p in [*self.nodes, *self.receivers] for s in p.failure_report()]

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        for receiver in self.receivers:
            receiver.close()


@pytest.fixture
def load() -> Iterator[Load]:
    made = Load()
    try:
        yield made
    finally:
        made.close()


def submit_all(nodes: list[Node], doc: Path, receivers: list[Receiver], count: int) -> list[str]:
    """``count`` one-page jobs, job i through node i % 2 to receiver i % RECEIVERS, from 16 threads."""
    body = doc.read_bytes()

    def one(i: int) -> str:
        form = {"to": receivers[i % len(receivers)].uri, "resolution": "standard"}
        files = {"document": ("doc.pdf", body, "application/pdf")}
        r = nodes[i % len(nodes)].client.post("/v1/jobs", data=form, files=files)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(count)))


def unfinished(node: Node) -> int:
    r = node.client.get("/v1/jobs", params={"state": ["queued", "in_flight"], "limit": 1000})
    r.raise_for_status()
    return len(r.json()["jobs"])


def terminals(job: dict[str, Any]) -> int:
    return sum(e["type"] == "terminal" for e in job["events"])


def placed(event: dict[str, Any]) -> str | None:
    """The Call-ID a dialing event names (the INVITE is out), else None."""
    if event["type"] == "status" and event["status"] == "dialing":
        return (event.get("payload") or {}).get("call_id")
    return None


def call_ids(job: dict[str, Any]) -> list[str]:
    """The SIP Call-IDs of the calls the job placed, in order."""
    return [c for e in job["events"] if (c := placed(e))]


def overlaps(job: dict[str, Any]) -> list[str]:
    """What is wrong with the order of the job's calls: each call must be placed after the previous
    attempt ended (its ``retry`` status event), and an attempt may be retried only if it failed before
    phase C (no page confirmed). Empty when all is well."""
    problems: list[str] = []
    on: str | None = None  # the call of the attempt in progress
    pages = 0
    for e in job["events"]:
        payload = e.get("payload") or {}
        if call_id := placed(e):
            if on is not None:
                problems.append(f"{call_id} dialled while {on} was not ended")
            on, pages = call_id, 0
        elif e["type"] == "page":
            pages += 1
        elif e["type"] == "terminal" or (e["type"] == "status" and payload.get("retry")):
            if e["type"] == "status" and (pages or payload.get("pages")):
                problems.append(f"{on} retried after {max(pages, payload.get('pages') or 0)} page(s)")
            on = None
    return problems


@pytest.mark.load
def test_1000_jobs_submitted_through_two_nodes_at_once_are_each_sent_exactly_once(
    postgres: Any, load: Load, tmp_path: Path
) -> None:
    jobs = JOBS
    options = ["--channels", str(2 * CHANNELS), "--t38", "auto"]
    load.receivers = far = [Receiver("127.0.0.1", tmp_path, name=f"far{i}", options=options)
                            for i in range(RECEIVERS)]  # fmt: skip
    load.nodes = nodes = [Node(tmp_path / name, name, postgres.url) for name in ("node-a", "node-b")]
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_healthy()
    doc = docfactory.text_pdf(tmp_path / "one-page.pdf", pages=1)

    started = time.monotonic()
    ids = submit_all(nodes, doc, far, jobs)
    submitted = time.monotonic() - started
    assert len(set(ids)) == jobs

    def all_done() -> bool:
        left = unfinished(nodes[0])
        print(f"  {time.monotonic() - started:6.1f} s: {left} jobs not finished", flush=True)
        return left == 0

    print(f"\n{jobs} jobs submitted through 2 nodes in {submitted:.1f} s")
    wait_for(all_done, 120 + 2 * jobs, f"jobs not finished: {unfinished(nodes[0])} of {jobs}", interval=5)
    done = time.monotonic() - started
    details = [nodes[i % 2].get(f"/v1/jobs/{job_id}") for i, job_id in enumerate(ids)]

    # every job completed, with exactly one terminal event
    failures = [(d["id"], d["state"], d["status"], d["attempts"], d["last_error"]) for d in details
                if d["state"] != "completed" or terminals(d) != 1]  # fmt: skip
    assert not failures, f"{len(failures)} jobs not completed with one terminal event: {failures[:50]}"

    # no job dialled twice: one call per attempt, every Call-ID once; a call only after the previous
    # attempt ended, and a retry only after an attempt that failed before phase C (no page confirmed)
    calls = {d["id"]: call_ids(d) for d in details}
    wrong = {d["id"]: (len(calls[d["id"]]), d["attempts"]) for d in details
             if len(calls[d["id"]]) != d["attempts"]}  # fmt: skip
    assert not wrong, f"jobs whose calls are not one per attempt (calls, attempts): {wrong}"
    everyone = Counter(c for cs in calls.values() for c in cs)
    assert all(n == 1 for n in everyone.values()), [c for c, n in everyone.items() if n > 1]
    overlapping = {d["id"]: problems for d in details if (problems := overlaps(d))}
    assert not overlapping, f"{len(overlapping)} jobs: {overlapping}"
    retried = {d["id"]: d["attempts"] for d in details if d["attempts"] > 1}

    # the far ends: one complete fax per job, each from the job's last call; nothing else sent whole
    def far_calls() -> list[dict[str, Any]]:
        return [c for r in far for c in r.calls()]

    wait_for(lambda: sum(c["ok"] for c in far_calls()) >= jobs, 60, "the far ends did not log every fax")
    time.sleep(1)
    received = far_calls()
    ok = Counter(c["call_id"] for c in received if c["ok"])
    assert sum(ok.values()) == jobs and all(n == 1 for n in ok.values()), ok.most_common(5)
    assert set(ok) == {cs[-1] for cs in calls.values()}, "a fax received is not a job's last call"
    not_one_page = [c for c in received if c["ok"] and c["pages"] != 1]
    assert not not_one_page, not_one_page
    assert {c["call_id"] for c in received} <= set(everyone), "the far ends answered a call no job placed"
    assert sum(len(r.complete()) for r in far) == jobs

    # two nodes never held one attempt, and both sent a share
    claims = Counter((job_id, attempt) for node in nodes for job_id, _, attempt in node.claims())
    assert claims == Counter({(d["id"], k): 1 for d in details for k in range(1, d["attempts"] + 1)})
    last = {d["id"]: d["attempts"] for d in details}
    share = Counter(node_id for node in nodes for job_id, node_id, attempt in node.claims()
                    if attempt == last[job_id])  # fmt: skip
    print(f"{jobs} jobs completed in {done:.1f} s ({jobs / done * 60:.0f} faxes/min); sent by {dict(share)};"
          f" retried: {len(retried)}; media {Counter(c['media'] for c in received if c['ok'])}")
    assert set(share) == {"node-a", "node-b"}, share
