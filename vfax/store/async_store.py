"""The job store's operations as coroutines, for code on the event loop that carries SIP and media."""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vfax.status import FaxStatus
from vfax.store.events import EventType, FaxEvent
from vfax.store.model import InboundFax, JobFilter, JobStore, NodeInfo, OutboundJob, RecoveryReport
from vfax.store.retry import AttemptResult


class AsyncJobStore:
    """The same operations as coroutines: each call runs in a worker thread, so a slow fsync never stalls
    the event loop that carries SIP and media. ``sync`` is the wrapped store."""

    def __init__(self, store: JobStore) -> None:
        self.sync = store

    async def submit(self, document: str | os.PathLike[str], destination: str, **kw: Any) -> OutboundJob:
        return await asyncio.to_thread(self.sync.submit, document, destination, **kw)

    async def claim_next(self, now: float | None = None, device: str | None = None) -> OutboundJob | None:
        return await asyncio.to_thread(self.sync.claim_next, now, device)

    async def record_attempt_result(self, job_id: str, result: AttemptResult, **kw: Any) -> OutboundJob:
        return await asyncio.to_thread(self.sync.record_attempt_result, job_id, result, **kw)

    async def cancel(self, job_id: str, **kw: Any) -> OutboundJob:
        return await asyncio.to_thread(self.sync.cancel, job_id, **kw)

    async def get(self, job_id: str) -> OutboundJob:
        return await asyncio.to_thread(self.sync.get, job_id)

    async def list(
        self, filter: JobFilter | None = None, limit: int = 100, offset: int = 0
    ) -> builtins.list[OutboundJob]:
        return await asyncio.to_thread(self.sync.list, filter, limit, offset)

    async def record_inbound(self, **kw: Any) -> InboundFax:
        return await asyncio.to_thread(lambda: self.sync.record_inbound(**kw))

    async def update_inbound(self, inbound_id: str, **kw: Any) -> InboundFax:
        return await asyncio.to_thread(self.sync.update_inbound, inbound_id, **kw)

    async def finish_inbound(self, inbound_id: str, status: FaxStatus, **kw: Any) -> InboundFax:
        return await asyncio.to_thread(self.sync.finish_inbound, inbound_id, status, **kw)

    async def place_inbound_files(self, inbound_id: str, **kw: Any) -> InboundFax:
        return await asyncio.to_thread(self.sync.place_inbound_files, inbound_id, **kw)

    async def get_inbound(self, inbound_id: str) -> InboundFax:
        return await asyncio.to_thread(self.sync.get_inbound, inbound_id)

    async def append_event(
        self,
        job_id: str,
        type: EventType,
        status: FaxStatus,
        payload: Mapping[str, Any] | None = None,
        **kw: Any,
    ) -> FaxEvent:
        return await asyncio.to_thread(self.sync.append_event, job_id, type, status, payload, **kw)

    async def events_for(self, job_id: str) -> builtins.list[FaxEvent]:
        return await asyncio.to_thread(self.sync.events_for, job_id)

    async def recover_after_crash(self, now: float | None = None, **kw: Any) -> RecoveryReport:
        return await asyncio.to_thread(self.sync.recover_after_crash, now, **kw)

    # -- nodes and leases -------------------------------------------------------------------------

    async def register_node(self, node_id: str, **kw: Any) -> NodeInfo:
        return await asyncio.to_thread(lambda: self.sync.register_node(node_id, **kw))

    async def heartbeat(self, node_id: str, **kw: Any) -> int:
        return await asyncio.to_thread(lambda: self.sync.heartbeat(node_id, **kw))

    async def leave_node(self, node_id: str, **kw: Any) -> None:
        await asyncio.to_thread(lambda: self.sync.leave_node(node_id, **kw))

    async def list_nodes(self, **kw: Any) -> builtins.list[NodeInfo]:
        return await asyncio.to_thread(lambda: self.sync.list_nodes(**kw))

    async def expire_leases(self, **kw: Any) -> RecoveryReport:
        return await asyncio.to_thread(lambda: self.sync.expire_leases(**kw))

    async def set_node_draining(self, node_id: str, draining: bool, **kw: Any) -> NodeInfo:
        return await asyncio.to_thread(lambda: self.sync.set_node_draining(node_id, draining, **kw))

    async def hold_role(self, role: str, node_id: str, **kw: Any) -> bool:
        return await asyncio.to_thread(lambda: self.sync.hold_role(role, node_id, **kw))

    async def release_role(self, role: str, node_id: str) -> None:
        await asyncio.to_thread(lambda: self.sync.release_role(role, node_id))

    # -- files --------------------------------------------------------------------------------------

    @property
    def holds_files(self) -> bool:
        return self.sync.holds_files

    async def store_file(self, owner_id: str, kind: str, path: Path) -> None:
        await asyncio.to_thread(self.sync.store_file, owner_id, kind, path)

    async def fetch_file(self, owner_id: str, kind: str, dest: Path) -> Path | None:
        return await asyncio.to_thread(self.sync.fetch_file, owner_id, kind, dest)

    # -- waking ---------------------------------------------------------------------------------------

    async def wait_for_jobs(self, timeout: float) -> bool:
        """Sleep until a job may be due: True when another node announced one (PostgreSQL LISTEN on
        ``vfax_jobs``), False after ``timeout``. A store without notifications just sleeps (in one process
        the API wakes the controller itself)."""
        waiter = getattr(self.sync, "wait_for_jobs_async", None)
        if waiter is None:
            await asyncio.sleep(timeout)
            return False
        result: bool = await waiter(timeout)
        return result

    async def close(self) -> None:
        closer = getattr(self.sync, "aclose", None)
        if closer is not None:
            await closer()  # the LISTEN connection lives on this event loop
        await asyncio.to_thread(self.sync.close)
