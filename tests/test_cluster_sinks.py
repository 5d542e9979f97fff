"""Event sinks in a cluster: each sink is delivered by one node at a time, and by another when that one
leaves. Two controllers (two nodes) on one real PostgreSQL, each configured with the same sink."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from vfax.service.config import NodeConfig
from vfax.service.controller import Controller
from vfax.service.events import CallbackSink
from vfax.status import FaxStatus
from vfax.store.events import FaxEvent
from vfax.store.postgres import PostgresJobStore

NODE = NodeConfig(lease_seconds=3.0, heartbeat_seconds=0.3, give_up_seconds=2.0)


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        await asyncio.sleep(0.1)


class Node:
    def __init__(self, tmp: Path, url: str, name: str) -> None:
        self.name = name
        self.seen: list[FaxEvent] = []
        self.store = PostgresJobStore(url, owner=name, lease_seconds=NODE.lease_seconds)
        self.controller = Controller(
            self.store, [], inbox=tmp / name / "inbox", node=NODE, poll_interval=0.2,
            sinks=[CallbackSink(self.seen.append, name="feed")],
        )  # fmt: skip


def test_each_event_is_delivered_by_one_node_and_the_sink_moves_when_its_node_leaves(
    tmp_path: Path, postgres: Any
) -> None:
    doc = tmp_path / "doc.tif"
    doc.write_bytes(b"II*\x00 a document")
    a, b = Node(tmp_path, postgres.url, "a"), Node(tmp_path, postgres.url, "b")

    def events(n: int, tag: str) -> list[str]:
        ids = []
        for i in range(n):
            job = a.store.submit(str(doc), f"sip:{tag}{i}@127.0.0.1")
            a.store.append_event(job.id, "status", FaxStatus.FS_DIALING, {"n": i})
            ids += [e.event_id for e in a.store.events_for(job.id)]
        return ids

    def delivered() -> Counter[str]:
        return Counter(e.event_id for e in [*a.seen, *b.seen])

    async def scenario() -> tuple[list[str], list[str], Counter[str], Counter[str], str]:
        await a.controller.start()
        await b.controller.start()
        try:
            first = events(10, "x")
            for node in (a, b):
                node.controller.wake()
            await until(lambda: set(delivered()) >= set(first), 30, "the first events delivered")
            await asyncio.sleep(4 * NODE.heartbeat_seconds)  # time for a second deliverer to show up
            once = delivered()
            leader = a if a.seen else b
            other = b if leader is a else a
            await leader.controller.stop(grace=1)  # it leaves: the sink's role is free at once
            second = events(10, "y")
            other.controller.wake()
            await until(lambda: set(delivered()) >= set(second), 30, "the later events delivered")
            await asyncio.sleep(4 * NODE.heartbeat_seconds)
            return first, second, once, delivered(), leader.name
        finally:
            for node in (a, b):
                await node.controller.stop(grace=1)
                node.store.close()

    first, second, once, total, leader = asyncio.run(asyncio.wait_for(scenario(), 120))
    # before the leader left: one node delivered every event, each exactly once
    assert sorted(once) == sorted(first) and set(once.values()) == {1}, once
    left, stayed = (a, b) if leader == "a" else (b, a)
    assert {e.event_id for e in left.seen} == set(first) and not any(e.event_id in first for e in stayed.seen)
    # after: the node that stayed took the sink over and delivered the rest, still each once
    assert {e.event_id for e in stayed.seen} == set(second)
    assert set(total.values()) == {1} and sorted(total) == sorted(first + second)
