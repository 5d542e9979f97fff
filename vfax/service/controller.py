"""The controller: the fax service side that owns devices, the durable job store and the event sinks.

It plays the Windows Fax Service to our devices: it claims queued jobs from the store and runs each on
a device (start_job, send, end_job), records every attempt (the store applies the retry policy),
answers offered calls into the inbox (recording the reception *before* answering, so a crash can
never lose it), and turns every device status into an event in the store's outbox, from where the
dispatcher delivers it to the sinks (at least once, in order per job). The store writes the single
terminal event of each job itself.

After a crash it recovers first: jobs that were in flight are retried or failed per policy, and
receptions that were in progress become partial faxes whose pages are placed in the inbox.

Every store call runs in a worker thread (:class:`~vfax.store.async_store.AsyncJobStore`): a slow fsync
or a PostgreSQL outage never holds the event loop that carries SIP and media. Status and page events are
written in order by one writer task, and an attempt's result goes through the same writer after them.

As a node of a cluster (several ``vfax serve`` on one PostgreSQL store) it registers its id at start
(refused while a live node holds it), heartbeats every ``heartbeat_seconds`` (which extends the leases of
its calls) and settles the expired leases of dead nodes. A node that cannot heartbeat for
``give_up_seconds``, or learns that its leases were taken over (:class:`LeaseLostError`), aborts its
outgoing calls and leaves their results unrecorded: their jobs belong to whichever node retries them, so a
job is never sent by two nodes at once. Receptions go on (nobody else can take an incoming call over).
When the store holds files, a job's document is fetched into a local cache before its call, and a
reception's TIFF is stored after every page, so the completed pages are in the database before it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from sip.useragent import IncomingInvite
from vfax import documents, storage
from vfax.call.device import FaxReceive, FaxSend, JobHandle, VirtualFaxDevice
from vfax.call.media import T38Policy
from vfax.inbox import Inbox
from vfax.service.cleanup import sweep_deleted_faxes
from vfax.service.config import NodeConfig
from vfax.service.events import EventDispatcher, Sink
from vfax.status import FaxDevStatus, FaxStatus, is_fax_phase_failure
from vfax.storage import attempt_report_owner, attempt_report_path
from vfax.store.async_store import AsyncJobStore
from vfax.store.events import FaxEvent
from vfax.store.model import (
    InboundState,
    InvalidTransitionError,
    JobStore,
    LeaseLostError,
    OutboundJob,
    StoreUnavailableError,
    this_process,
)
from vfax.store.options import (
    OPT_ECM,
    OPT_HEADER,
    OPT_MAX_BIT_RATE,
    OPT_RECIPIENT_NAME,
    OPT_SENDER_NAME,
    OPT_T38,
    OPT_TSID,
)
from vfax.store.retry import AttemptResult

log = logging.getLogger("vfax.controller")

CANCEL_POLL_SECONDS = 1.0
#: How long an attempt's result is retried while the store is unreachable (the fax went out: it must be
#: recorded, or another node sends it again once the lease expires).
RECORD_RETRY_SECONDS = 120.0
LISTEN_SECONDS = 30.0

T = TypeVar("T")


def sink_role(name: str) -> str:
    """The store role whose holder delivers sink ``name``."""
    return f"sink:{name}"


def fax_send_for(job: OutboundJob) -> FaxSend:
    """The FAX_SEND of a stored job. Options the job does not set stay None (the device's value).

    Raises ValueError or TypeError for an option of the wrong type: a string "false" must not be
    read as a true ECM flag, nor a bool as a bit rate."""
    o = job.options
    ecm = o.get(OPT_ECM)
    if ecm is not None and not isinstance(ecm, bool):
        raise TypeError(f"option {OPT_ECM} must be true or false, not {ecm!r}")
    rate = o.get(OPT_MAX_BIT_RATE)
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int)):
        raise TypeError(f"option {OPT_MAX_BIT_RATE} must be a bit rate in bit/s, not {rate!r}")
    header = o.get(OPT_HEADER)
    return FaxSend(
        document=Path(job.document),
        destination=job.destination,
        caller_number=str(o.get(OPT_TSID, "")),
        sender_name=str(o.get(OPT_SENDER_NAME, "")),
        recipient_name=str(o.get(OPT_RECIPIENT_NAME, "")),
        ecm=ecm,
        max_bit_rate=rate,
        page_header=None if header is None else str(header),
        t38=T38Policy.parse(o[OPT_T38]) if o.get(OPT_T38) else None,
    )


class Controller:
    def __init__(
        self,
        store: JobStore,
        devices: Sequence[VirtualFaxDevice],
        *,
        inbox: Path,
        sinks: Sequence[Sink] = (),
        poll_interval: float = 1.0,
        node: NodeConfig | None = None,
        api_url: str | None = None,
        file_cache: Path | None = None,
        reports: Path | None = None,
    ) -> None:
        self.store = store
        self.astore = AsyncJobStore(store)
        self.devices = list(devices)
        self.inbox = Inbox(inbox)
        self.dispatcher = EventDispatcher(store, list(sinks)) if sinks else None
        self.poll_interval = poll_interval
        self.node = node or NodeConfig(lease_seconds=store.lease_seconds)
        self.node_id = store.owner  # the store claims under this id: the node's id
        self.api_url = api_url
        self.file_cache = file_cache or self.inbox.directory.parent / "cache"
        #: the call report of each outbound attempt: <reports>/<job id>/attempt-<n>.json (attempt_report_path)
        self.reports = reports or self.inbox.directory.parent / "reports"
        self._wake = asyncio.Event()
        self._stopping = False
        self._queue_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._active: dict[asyncio.Task[None], tuple[VirtualFaxDevice, JobHandle | None]] = {}
        self._job_of: dict[int, str] = {}  # device job handle id -> store job/inbound id
        self._last_pages: dict[str, int] = {}
        self._published: dict[str, int] = {}
        self._parts: dict[str, Path] = {}  # inbound id -> its part file while it is received
        self._abandoned: set[str] = set()  # jobs whose lease this node gave up: their results are not ours
        self._unsettled: set[str] = set()  # abandoned jobs whose calls ended: still leased to this node
        self._subscribers: set[asyncio.Queue[FaxEvent]] = set()
        self._writes: asyncio.Queue[tuple[Callable[[], Any], asyncio.Future[Any] | None]] = asyncio.Queue()
        self._store_ok_at = 0.0  # loop time of the last successful heartbeat
        self._last_store_error = ""
        self._gave_up = False
        self.draining = False

    # --- lifetime -----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover, join the store as a node (:class:`DuplicateNodeError` while a live node holds the id:
        nothing else was done), then take work."""
        report = await self.astore.recover_after_crash()
        if report.changed:
            log.warning(
                "recovered after a crash: %d jobs requeued, %d failed, %d receptions partial, %d failed",
                len(report.requeued),
                len(report.failed),
                len(report.inbound_partial),
                len(report.inbound_failed),
            )
        await self.astore.register_node(
            self.node_id, api=self.api_url, info=self.node_info(), lease_seconds=self.node.lease_seconds
        )
        log.warning(
            "node %s joined the store (lease %g s, heartbeat every %g s, give-up after %g s)",
            self.node_id, self.node.lease_seconds, self.node.heartbeat_seconds, self.node.give_up_seconds,
        )  # fmt: skip
        self._store_ok_at = asyncio.get_running_loop().time()
        await asyncio.to_thread(self._salvage_partial_receptions)
        for device in self.devices:
            device.on_offered = self._offered
            device.on_status = self._on_status
        await self._lead_sinks()
        self._tasks = [
            asyncio.ensure_future(self._writer()),
            asyncio.ensure_future(self._heartbeat_loop()),
            asyncio.ensure_future(self._watchdog_loop()),
            asyncio.ensure_future(self._listen_loop()),
        ]
        self._queue_task = asyncio.ensure_future(self._queue_loop())

    async def stop(self, grace: float = 30.0) -> None:
        """Stop taking work; let calls in progress finish for ``grace`` seconds, then abort them
        (an aborted send is retried per policy after the restart: it is recorded as disconnected)."""
        self._stopping = True
        self._wake.set()
        if self._queue_task is not None:
            self._queue_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._queue_task
        if self._active:
            _, pending = await asyncio.wait(set(self._active), timeout=grace)
            for task in pending:
                device, handle = self._active.get(task, (None, None))
                if device is not None and handle is not None:
                    await device.abort(handle)
            if pending:
                await asyncio.wait(pending, timeout=10)
        await self._drain_writes()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self.dispatcher is not None:
            await self.dispatcher.stop()
            for name in self.dispatcher.names:  # let another node deliver at once, not after the lease
                with contextlib.suppress(Exception):
                    await self.astore.release_role(sink_role(name), self.node_id)
        try:
            await self.astore.leave_node(self.node_id)
        except Exception as exc:
            log.warning("node %s: could not record leaving the store: %s", self.node_id, exc)

    def wake(self) -> None:
        """Something changed in the store (a job was submitted or cancelled): look now."""
        self._wake.set()
        if self.dispatcher is not None:
            self.dispatcher.wake()

    async def subscribe(self) -> AsyncIterator[FaxEvent]:
        """Live events as they are written (for the HTTP API's event stream)."""
        queue: asyncio.Queue[FaxEvent] = asyncio.Queue(maxsize=1000)
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    def calls_in_progress(self) -> list[dict[str, Any]]:
        """The calls this node runs now: job or fax id, direction, device, SIP call id."""
        calls = []
        for device, handle in list(self._active.values()):
            if handle is None:  # claimed a moment ago, its task not started yet: still a call to come
                calls.append({"id": None, "kind": "starting", "device": device.name, "call_id": None,
                              "status": "starting", "pages": 0})  # fmt: skip
                continue
            calls.append({
                "id": self._job_of.get(handle.id),
                "kind": handle.kind or "starting",
                "device": device.name,
                "call_id": handle.call.call_id if handle.call is not None else None,
                "status": handle.status.status.string_id,
                "pages": handle.status.page_count,
            })  # fmt: skip
        return calls

    def node_info(self) -> dict[str, Any]:
        """What this node reports in its heartbeat (``GET /v1/nodes``)."""
        devices = self.devices_status()
        return {
            "api": self.api_url,
            "process": this_process(),  # lets a restart after a crash on this host take the id at once
            "devices": devices,
            "registrations": {d["name"]: d["registration"] for d in devices},
            "calls": self.calls_in_progress(),
            "draining": self.draining,
        }

    def devices_status(self) -> list[dict[str, Any]]:
        out = []
        for d in self.devices:
            reg = d.line.registration
            out.append({
                "name": d.name,
                "uri": d.line.uri,
                "registration": reg.state.value if reg else "none",
                "expires": reg.expires if reg else None,
                "channels": d.line.config.channels,
                "active_calls": len(d.line.active),
            })  # fmt: skip
        return out

    # --- outbound -----------------------------------------------------------------------------------
    async def _queue_loop(self) -> None:
        failing = False
        while not self._stopping:
            self._wake.clear()
            try:
                if not self._gave_up and not self.draining:
                    await self._claim_all()
                if failing:
                    log.warning("node %s: the store answers again; taking jobs", self.node_id)
                failing = False
            except Exception as exc:
                if not failing:
                    log.error("node %s: cannot claim jobs: %s", self.node_id, exc)
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _claim_all(self) -> None:
        for device in self.devices:
            while len(device.line.active) + self._starting(device) < device.line.config.channels:
                if self._stopping or self._gave_up or self.draining:
                    return
                job = await self.astore.claim_next(device=device.name)
                if job is None:
                    break
                log.info("job %s claimed by node %s (device %s, attempt %d)",
                         job.id, self.node_id, device.name, job.attempts)  # fmt: skip
                task = asyncio.ensure_future(self._run_outbound(job, device))
                self._active[task] = (device, None)
                task.add_done_callback(self._done)

    async def _listen_loop(self) -> None:
        """Wake the queue when another node queued a job (PostgreSQL NOTIFY; a no-op wait elsewhere)."""
        while not self._stopping:
            try:
                if await self.astore.wait_for_jobs(LISTEN_SECONDS):
                    self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("node %s: waiting for job notifications failed: %s", self.node_id, exc)
                await asyncio.sleep(max(1.0, self.poll_interval))

    # --- heartbeat, leases, giving up ---------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        failing = False
        while not self._stopping:
            await asyncio.sleep(self.node.heartbeat_seconds)
            try:
                await self.heartbeat_once()
                if failing:
                    log.warning("node %s: heartbeat works again", self.node_id)
                failing = False
            except LeaseLostError as exc:
                log.error("node %s: %s", self.node_id, exc)
                await self._give_up("its leases were taken over by another node")
                await self._rejoin()
            except Exception as exc:
                if not failing:
                    log.error("node %s: heartbeat failed: %s", self.node_id, exc)
                failing = True
                self._last_store_error = str(exc)

    async def _watchdog_loop(self) -> None:
        """Give up on time even while a store call hangs (a connect timeout may outlast give_up_seconds)."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            await asyncio.sleep(min(1.0, self.node.heartbeat_seconds))
            down_for = loop.time() - self._store_ok_at
            if down_for >= self.node.give_up_seconds and not self._gave_up:
                why = f"no heartbeat for {down_for:.0f} s ({self._last_store_error or 'no answer'})"
                await self._give_up(why)

    async def heartbeat_once(self) -> None:
        """One heartbeat (extends this node's leases), then settle other nodes' expired leases."""
        await self.astore.heartbeat(
            self.node_id, info=self.node_info(), lease_seconds=self.node.lease_seconds
        )
        self._store_ok_at = asyncio.get_running_loop().time()
        await self._follow_drain_mark()
        await self._lead_sinks()
        if self._unsettled:  # our row is still up: nobody took these over, and the heartbeat just extended
            await self._settle_abandoned()  # their leases: end their attempts, or they would stay in flight
        if self._gave_up:
            log.warning("node %s: the store answers again; taking jobs", self.node_id)
            self._gave_up = False
            self._wake.set()
        try:  # faxes deleted through any node's API: the files this node holds of them
            await self._write(lambda: sweep_deleted_faxes(
                self.store, inbox=self.inbox.directory, cache=self.file_cache, now=time.time()))
        except Exception as exc:
            log.warning("node %s: files of deleted faxes not swept: %s", self.node_id, exc)
        report = await self.astore.expire_leases(forget_nodes_after=self.node.forget_nodes_after)
        if report.nodes_forgotten:
            log.info("node %s: forgot nodes gone for over %g s: %s", self.node_id,
                     self.node.forget_nodes_after, ", ".join(report.nodes_forgotten))  # fmt: skip
        if report.changed:
            log.warning(
                "node %s: expired leases of other nodes: %d jobs requeued, %d failed, %d cancelled,"
                " %d receptions partial, %d failed",
                self.node_id, len(report.requeued), len(report.failed), len(report.cancelled),
                len(report.inbound_partial), len(report.inbound_failed),
            )  # fmt: skip
            self._wake.set()
            for job_id in [*report.requeued, *report.failed, *report.cancelled]:
                self._publish(job_id)

    async def _lead_sinks(self) -> None:
        """Take or keep the role of each configured sink (one node at a time delivers a sink) and run
        exactly the sinks held."""
        if self.dispatcher is None:
            return
        held = set()
        for name in self.dispatcher.names:
            try:
                role = sink_role(name)
                if await self.astore.hold_role(role, self.node_id, lease_seconds=self.node.lease_seconds):
                    held.add(name)
            except Exception as exc:
                log.warning("node %s: cannot hold the role of sink %s: %s", self.node_id, name, exc)
        before = self.dispatcher.running
        if held != before:
            log.warning("node %s delivers sinks %s (was %s)", self.node_id, sorted(held) or "none",
                        sorted(before) or "none")  # fmt: skip
        await self.dispatcher.run_only(held)

    async def _follow_drain_mark(self) -> None:
        """Apply the drain mark of this node's row (any node's API may set it)."""
        before = self.draining
        me = next((n for n in await self.astore.list_nodes() if n.id == self.node_id), None)
        # This node's API may have changed the mark (and applied it) while the list was read: the row
        # read may predate that change, so it must not undo it; the next heartbeat reads it again.
        if me is not None and self.draining == before and me.draining != self.draining:
            self.set_draining(me.draining)

    def set_draining(self, draining: bool) -> None:
        """Draining: claim no new jobs and take no new calls (INVITE and OPTIONS get 503, so a dispatcher
        in front routes elsewhere); calls in progress finish. For an upgrade or a host's maintenance."""
        if draining == self.draining:
            return
        self.draining = draining
        for device in self.devices:
            device.line.set_unavailable(draining)
        log.warning(
            "node %s %s (%d call(s) in progress)", self.node_id,
            "drains: no new jobs or calls" if draining else "takes work again", len(self._active),
        )  # fmt: skip
        if not draining:
            self._wake.set()

    async def _settle_abandoned(self) -> None:
        """The jobs this node gave up and still holds: each attempt ends as disconnected (retry policy)."""
        for job_id in sorted(self._unsettled):
            result = AttemptResult(
                FaxStatus.FS_DISCONNECTED, error=f"node {self.node_id} gave up the call (store unreachable)"
            )
            try:
                job = await self._write(lambda j=job_id, r=result: self.store.record_attempt_result(j, r))
                log.warning("job %s: abandoned attempt recorded as disconnected -> %s", job_id, job.state)
            except (InvalidTransitionError, LeaseLostError) as exc:  # another node has it now: its business
                log.info("job %s: not settled here: %s", job_id, exc)
            except Exception as exc:
                log.warning("job %s: abandoned attempt not settled yet: %s", job_id, exc)
                continue
            self._unsettled.discard(job_id)
            self._publish(job_id)

    async def _give_up(self, why: str) -> None:
        """Abort every outgoing call now (FaxDevAbortOperation) and leave its result to the node that
        retries the job: this node may no longer hold its lease."""
        self._gave_up = True
        if self.dispatcher is not None:  # its sink roles may pass to another node meanwhile
            await self.dispatcher.run_only(())
        sends = [
            (device, handle)
            for device, handle in list(self._active.values())
            if handle is not None and handle.kind == "send"
        ]
        log.error(
            "node %s gives up its outgoing calls: %s; aborting %d call(s) without recording their results"
            " (another node retries those jobs once their leases expire)",
            self.node_id, why, len(sends),
        )  # fmt: skip
        for device, handle in sends:
            job_id = self._job_of.get(handle.id)
            if job_id is not None:
                self._abandoned.add(job_id)
                log.error("node %s: job %s abandoned (call aborted)", self.node_id, job_id)
            with contextlib.suppress(Exception):
                await device.abort(handle)

    async def _rejoin(self) -> None:
        try:
            await self.astore.register_node(
                self.node_id, api=self.api_url, info=self.node_info(), lease_seconds=self.node.lease_seconds
            )
        except Exception as exc:
            log.error("node %s: cannot rejoin the store yet: %s", self.node_id, exc)
            return
        log.warning("node %s rejoined the store", self.node_id)
        self._store_ok_at = asyncio.get_running_loop().time()
        self._gave_up = False
        self._wake.set()

    # --- ordered store writes -----------------------------------------------------------------------
    async def _writer(self) -> None:
        """Run queued store writes one after another in a worker thread (events stay in order)."""
        while True:
            fn, future = await self._writes.get()
            try:
                result = await asyncio.to_thread(fn)
            except Exception as exc:
                if future is not None and not future.done():
                    future.set_exception(exc)
                else:
                    log.debug("store write failed: %s", exc)
            else:
                if future is not None and not future.done():
                    future.set_result(result)
            finally:
                self._writes.task_done()

    def _write_later(self, fn: Callable[[], Any]) -> None:
        self._writes.put_nowait((fn, None))

    async def _write(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` after every write queued before it; its result or exception."""
        if not self._tasks or self._tasks[0].done():  # not started (or stopped): run it directly
            return await asyncio.to_thread(fn)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._writes.put_nowait((fn, future))
        return await future

    async def _drain_writes(self) -> None:
        if self._tasks and not self._tasks[0].done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._writes.join(), 30)

    def _starting(self, device: VirtualFaxDevice) -> int:
        """Jobs of ``device`` whose call is not on the line yet (claimed, fetching the document, ...): they
        hold a channel already. Claims await the store, so such jobs run while the queue claims more."""
        return sum(1 for d, h in self._active.values() if d is device and (h is None or h.call is None))

    def _done(self, task: asyncio.Task[None]) -> None:
        self._active.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("job task failed", exc_info=task.exception())
        self._wake.set()

    async def _run_outbound(self, job: OutboundJob, device: VirtualFaxDevice) -> None:
        handle = device.start_job()
        self._job_of[handle.id] = job.id
        me = asyncio.current_task()
        if me is not None:
            self._active[me] = (device, handle)
        try:
            fax = fax_send_for(job)
        except (ValueError, TypeError) as exc:
            final_job = await self._record(
                job.id, AttemptResult(FaxStatus.FS_FATAL_ERROR, error=f"bad job options: {exc}")
            )
            device.end_job(handle)
            self._forget(handle.id, job.id, job_final=final_job is None or final_job.state.is_final)
            return
        if not fax.document.exists() and self.astore.holds_files:
            fax = replace(fax, document=await self._fetch_document(job))
        watcher = asyncio.ensure_future(self._watch_cancel(job.id, device, handle))
        try:
            if not fax.document.exists():
                status = FaxDevStatus(FaxStatus.FS_FATAL_ERROR, at=time.time())
                handle.error_text = f"document {fax.document} is missing"
            else:
                status = await device.send(
                    handle, fax, callback=lambda h, call_id: self._call_placed(job.id, call_id)
                )
        except ValueError as exc:  # a bad TSID, bit rate, ... refused before any call
            status = FaxDevStatus(FaxStatus.FS_FATAL_ERROR, at=time.time())
            handle.error_text = str(exc)
        finally:
            watcher.cancel()
        outcome = handle.outcome
        if outcome is not None and outcome.report:
            await self._keep_attempt_report(job, outcome.report)
        result = outcome.result if outcome else None
        pages = result.pages if result else 0
        final = status.status
        if final is FaxStatus.FS_COMPLETED and pages == 0:  # never a success without a page
            final = FaxStatus.FS_FATAL_ERROR
        if job.id in self._abandoned:
            self._abandoned.discard(job.id)
            log.error(
                "job %s: ended %s on node %s after it gave the job up; not recorded (the node that retries"
                " the job records it)", job.id, final.string_id, self.node_id,
            )  # fmt: skip
            self._unsettled.add(job.id)
            device.end_job(handle)
            self._forget(handle.id, job.id, job_final=True)
            self._drop_cache(job.id)
            return
        after = await self._record(
            job.id,
            AttemptResult(
                final,
                pages=pages,
                error=handle.error_text,
                sip_code=outcome.sip_status if outcome else None,
                t30_code=result.code if result else None,
                fax_phase=bool(result and (pages > 0 or is_fax_phase_failure(result.code))),
            ),
        )
        device.end_job(handle)
        self._forget(handle.id, job.id, job_final=after is None or after.state.is_final)
        if after is None or after.state.is_final:
            self._drop_cache(job.id)

    async def _keep_attempt_report(self, job: OutboundJob, report: dict[str, Any]) -> None:
        """The call report of this attempt (the claim numbered it), kept for ``GET /v1/jobs/{id}/attempts/
        {n}/report`` and the console; with a store that holds files, any node's API serves it. A report
        that cannot be written is logged and lost, never the attempt's result."""
        path = attempt_report_path(self.reports, job.id, job.attempts)
        try:
            await asyncio.to_thread(storage.write_json, path, report)
            if self.astore.holds_files:
                owner = attempt_report_owner(job.id, job.attempts)
                await self._write(lambda: self.store.store_file(owner, "report", path))
        except Exception as exc:  # a full disk, the store down: the fax result matters more
            log.warning("job %s: call report of attempt %d not kept: %s", job.id, job.attempts, exc)

    async def _record(self, job_id: str, result: AttemptResult) -> OutboundJob | None:
        """Record one attempt (the store applies the retry policy); returns the job as it now is.

        While the store is unreachable the result is retried for a while: the call happened, and an
        unrecorded result would make another node send the fax again once the lease expires."""
        job = None
        deadline = asyncio.get_running_loop().time() + RECORD_RETRY_SECONDS
        while True:
            try:
                job = await self._write(lambda: self.store.record_attempt_result(job_id, result))
                log.info(
                    "job %s: %s after attempt %d -> %s",
                    job_id, result.status.string_id, job.attempts, job.state,
                )  # fmt: skip
            except StoreUnavailableError as exc:
                if asyncio.get_running_loop().time() < deadline and job_id not in self._abandoned:
                    log.warning("job %s: result not recorded yet (%s); retrying", job_id, exc)
                    await asyncio.sleep(1.0)
                    continue
                log.error("job %s: could not record the attempt: %s", job_id, exc)
            except (InvalidTransitionError, LeaseLostError) as exc:  # the lease expired, another node has it
                log.error("job %s: result %s not recorded: %s", job_id, result.status.string_id, exc)
            except Exception:
                log.exception("job %s: could not record the attempt", job_id)
            break
        self._publish(job_id)
        return job

    async def _fetch_document(self, job: OutboundJob) -> Path:
        """The job's document from the database into the local cache (a job submitted on another node; the
        store keeps the bytes with the job row). The recorded path when it cannot be fetched (the attempt
        then fails as a missing document)."""
        dest = self.file_cache / "jobs" / job.id / "fax.tif"
        try:
            await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
            found = await self.astore.fetch_file(job.id, "document", dest)
        except Exception as exc:
            log.warning("job %s: cannot fetch its document from the store: %s", job.id, exc)
            found = None
        if found is not None:
            log.info("job %s: document fetched from the store into %s", job.id, found)
            return found
        return Path(job.document)

    def _drop_cache(self, job_id: str) -> None:
        path = self.file_cache / "jobs" / job_id
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)

    def _forget(self, handle_id: int, job_id: str, *, job_final: bool) -> None:
        """Drop what was kept for an attempt (its handle, its page count: a retry counts pages from 0
        again) and, once the job is final, what was kept for the job: a long-running service must
        not keep state for every job it ever ran."""
        self._job_of.pop(handle_id, None)
        self._last_pages.pop(job_id, None)
        if job_final:
            self._published.pop(job_id, None)

    async def _watch_cancel(self, job_id: str, device: VirtualFaxDevice, handle: JobHandle) -> None:
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            with contextlib.suppress(Exception):
                if (await self.astore.get(job_id)).cancel_requested:
                    log.info("job %s: cancel requested, aborting the call", job_id)
                    await device.abort(handle)
                    return

    def _call_placed(self, job_id: str, call_id: str) -> None:
        self._event(job_id, "status", FaxStatus.FS_DIALING, {"call_id": call_id})

    # --- inbound ------------------------------------------------------------------------------------
    async def _offered(self, device: VirtualFaxDevice, incoming: IncomingInvite) -> None:
        if self._stopping:
            await incoming.reject(503, "Service Unavailable")
            return
        part = self.inbox.new_part_file()
        try:
            inbound = await self.astore.record_inbound(  # before the answer: a crash never loses this call
                call_id=incoming.call_id,
                caller=str(incoming.from_.uri),
                callee=str(incoming.to.uri),
                device=device.name,
                tiff_path=part,
            )
        except Exception as exc:  # no record, no answer: the caller retries (or another node takes it)
            log.error("call %s refused: the reception could not be recorded (%s)", incoming.call_id, exc)
            await incoming.reject(503, "Service Unavailable")
            return
        handle = device.start_job()
        self._job_of[handle.id] = inbound.id
        self._parts[inbound.id] = part
        me = asyncio.current_task()
        if me is not None:
            self._active[me] = (device, handle)
        try:
            status = await device.receive(handle, incoming, FaxReceive(self.inbox.directory, part_file=part))
            rec = handle.reception
            pages = rec.outcome.result.pages if rec and rec.outcome.result else 0
            csi = rec.outcome.result.remote_ident if rec and rec.outcome.result else None
            final = (
                status.status
                if pages > 0 or status.status is not FaxStatus.FS_COMPLETED
                else FaxStatus.FS_FATAL_ERROR
            )
            if rec is not None and rec.placed is not None and rec.placed.kept_part is not None:
                handle.error_text = (
                    f"received but not placed ({rec.placed.error}); salvaged at the next start"
                )
            elif rec is not None and rec.placed is not None:
                placed = rec.placed
                if self.astore.holds_files:  # before the row points at them: any node's API serves them
                    for kind, path in (("tiff", placed.tiff), ("pdf", placed.pdf), ("report", placed.report)):
                        if path is not None:
                            await self._write(lambda k=kind, p=path: self.store.store_file(inbound.id, k, p))
                await self._write(
                    lambda: self.store.place_inbound_files(
                        inbound.id, tiff_path=placed.tiff, pdf_path=placed.pdf, report_path=placed.report
                    )
                )
            await self._write(
                lambda: self.store.finish_inbound(
                    inbound.id, final, pages=pages, error=handle.error_text, remote_csi=csi
                )
            )
        finally:
            if me is not None:
                self._active.pop(me, None)
            self._parts.pop(inbound.id, None)
            device.end_job(handle)
            self._publish(inbound.id)
            self._forget(handle.id, inbound.id, job_final=True)

    def _salvage_partial_receptions(self) -> None:
        """Receptions cut by a crash, or that could not be placed (disk full): place whatever pages
        made it to disk. A crashed reception is a partial fax; a complete one keeps its name."""
        for fax in self.store.list_inbound(limit=1000):
            part = Path(fax.tiff_path) if fax.tiff_path else None
            if part is None or not part.name.endswith(".part") or not part.exists():
                continue
            if fax.state is InboundState.RECEIVING:
                continue  # only after recovery: a reception of this process is still running
            try:
                pages = len(documents.read_tiff_pages(part))
            except documents.DocumentError as exc:
                log.warning("reception %s: its part file is unreadable (%s); kept as is", fax.id, exc)
                continue
            if pages == 0:
                continue
            suffix = "" if fax.state is InboundState.COMPLETED else "-partial"
            stem = f"fax-{time.strftime('%Y%m%d-%H%M%S', time.localtime(fax.started_at))}{suffix}"
            tiff = storage.commit_file(part, storage.unique_path(self.inbox.directory, stem, ".tif"))
            pdf = None
            try:
                pdf = documents.tiff_to_pdf(tiff, tiff.with_suffix(".pdf"))
            except documents.DocumentError as exc:
                log.warning("reception %s: PDF not made (%s)", fax.id, exc)
            self.store.place_inbound_files(fax.id, tiff_path=tiff, pdf_path=pdf)
            log.warning("reception %s salvaged: %d page(s) placed in %s", fax.id, pages, tiff)

    # --- events -------------------------------------------------------------------------------------
    def _on_status(self, handle: JobHandle, status: FaxDevStatus) -> None:
        job_id = self._job_of.get(handle.id)
        if job_id is None or status.status.is_terminal:
            return  # the store writes the terminal event itself, once
        last = self._last_pages.get(job_id, 0)
        if status.page_count > last:
            self._last_pages[job_id] = status.page_count
            if handle.kind == "receive":  # the store knows how far a reception got, should we crash
                pages, csi = status.page_count, status.csi or None
                self._write_later(lambda: self.store.update_inbound(job_id, pages=pages, remote_csi=csi))
                part = self._parts.get(job_id)
                if part is not None and self.astore.holds_files:  # the completed pages, durable now
                    self._write_later(lambda: self._store_partial(job_id, part))
            self._event(job_id, "page", status.status, {"pages": status.page_count, "csi": status.csi})
        elif handle.history[-2:-1] and handle.history[-2].status is status.status:
            return  # the same status again (e.g. the remote CSI arrived): nothing new to tell
        else:
            self._event(job_id, "status", status.status, {"pages": status.page_count})

    def _store_partial(self, inbound_id: str, part: Path) -> None:
        """In a worker thread: the reception's TIFF as it is now (its completed pages) into the store."""
        try:
            if part.exists():
                self.store.store_file(inbound_id, "partial", part)
        except Exception as exc:
            log.warning("inbound fax %s: completed pages not stored in the database: %s", inbound_id, exc)

    def _event(self, job_id: str, kind: str, status: FaxStatus, payload: dict[str, Any]) -> None:
        payload = {**payload, "node": self.node_id}  # which node ran the call: attempts move between nodes

        def write() -> None:
            try:
                self.store.append_event(job_id, kind, status, payload)  # type: ignore[arg-type]
            except Exception as exc:  # e.g. the job is already final: an event after the end is refused
                log.debug("job %s: event %s not written: %s", job_id, kind, exc)

        if self._tasks and not self._tasks[0].done():
            self._write_later(write)
        else:
            write()
        self._publish(job_id)

    def _publish(self, job_id: str) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()
        if not self._subscribers:
            return
        loop = asyncio.get_running_loop()

        def read() -> None:
            events = self.store.events_for(job_id)
            loop.call_soon_threadsafe(self._deliver, job_id, events)

        if self._tasks and not self._tasks[0].done():
            self._write_later(read)  # after the writes queued before it
        else:
            self._deliver(job_id, self.store.events_for(job_id))

    def _deliver(self, job_id: str, events: list[FaxEvent]) -> None:
        seen = self._published.get(job_id, 0)
        for event in events:
            if event.seq > seen:
                seen = event.seq
                for q in list(self._subscribers):
                    with contextlib.suppress(asyncio.QueueFull):
                        q.put_nowait(event)
        self._published[job_id] = seen
