"""The controller: the fax service side that owns devices, the durable job store and the event sinks.

It plays the Windows Fax Service to our devices: it claims queued jobs from the store and runs each on
a device (start_job, send, end_job), records every attempt (the store applies the retry policy),
answers offered calls into the inbox (recording the reception *before* answering, so a crash can
never lose it), and turns every device status into an event in the store's outbox, from where the
dispatcher delivers it to the sinks (at least once, in order per job). The store writes the single
terminal event of each job itself.

After a crash it recovers first: jobs that were in flight are retried or failed per policy, and
receptions that were in progress become partial faxes whose pages are placed in the inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from sip.useragent import IncomingInvite
from vfax import documents, storage
from vfax.call.device import FaxReceive, FaxSend, JobHandle, VirtualFaxDevice
from vfax.call.media import T38Policy
from vfax.inbox import Inbox
from vfax.service.events import EventDispatcher, FaxEvent, Sink
from vfax.status import FaxDevStatus, FaxStatus, is_fax_phase_failure
from vfax.store.model import InboundState, OutboundJob
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
from vfax.store.sqlite import SqliteJobStore

log = logging.getLogger("vfax.controller")

CANCEL_POLL_SECONDS = 1.0


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
        store: SqliteJobStore,
        devices: Sequence[VirtualFaxDevice],
        *,
        inbox: Path,
        sinks: Sequence[Sink] = (),
        poll_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.devices = list(devices)
        self.inbox = Inbox(inbox)
        self.dispatcher = EventDispatcher(store, list(sinks)) if sinks else None
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._stopping = False
        self._queue_task: asyncio.Task[None] | None = None
        self._active: dict[asyncio.Task[None], tuple[VirtualFaxDevice, JobHandle | None]] = {}
        self._job_of: dict[int, str] = {}  # device job handle id -> store job/inbound id
        self._last_pages: dict[str, int] = {}
        self._published: dict[str, int] = {}
        self._subscribers: set[asyncio.Queue[FaxEvent]] = set()

    # --- lifetime -----------------------------------------------------------------------------------
    async def start(self) -> None:
        report = self.store.recover_after_crash()
        if report.changed:
            log.warning(
                "recovered after a crash: %d jobs requeued, %d failed, %d receptions partial, %d failed",
                len(report.requeued),
                len(report.failed),
                len(report.inbound_partial),
                len(report.inbound_failed),
            )
        self._salvage_partial_receptions()
        for device in self.devices:
            device.on_offered = self._offered
            device.on_status = self._on_status
        if self.dispatcher is not None:
            await self.dispatcher.start()
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
        if self.dispatcher is not None:
            await self.dispatcher.stop()

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
        while not self._stopping:
            self._wake.clear()
            for device in self.devices:
                while len(device.line.active) + self._starting(device) < device.line.config.channels:
                    job = self.store.claim_next(device=device.name)
                    if job is None:
                        break
                    task = asyncio.ensure_future(self._run_outbound(job.id, device))
                    self._active[task] = (device, None)
                    task.add_done_callback(self._done)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    def _starting(self, device: VirtualFaxDevice) -> int:
        return sum(1 for d, h in self._active.values() if d is device and h is None)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._active.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("job task failed", exc_info=task.exception())
        self._wake.set()

    async def _run_outbound(self, job_id: str, device: VirtualFaxDevice) -> None:
        job = self.store.get(job_id)
        handle = device.start_job()
        self._job_of[handle.id] = job.id
        me = asyncio.current_task()
        if me is not None:
            self._active[me] = (device, handle)
        try:
            fax = fax_send_for(job)
        except (ValueError, TypeError) as exc:
            final_job = self._record(
                job.id, AttemptResult(FaxStatus.FS_FATAL_ERROR, error=f"bad job options: {exc}")
            )
            device.end_job(handle)
            self._forget(handle.id, job.id, job_final=final_job is None or final_job.state.is_final)
            return
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
        result = outcome.result if outcome else None
        pages = result.pages if result else 0
        final = status.status
        if final is FaxStatus.FS_COMPLETED and pages == 0:  # never a success without a page
            final = FaxStatus.FS_FATAL_ERROR
        after = self._record(
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

    def _record(self, job_id: str, result: AttemptResult) -> OutboundJob | None:
        """Record one attempt (the store applies the retry policy); returns the job as it now is."""
        job = None
        try:
            job = self.store.record_attempt_result(job_id, result)
            log.info(
                "job %s: %s after attempt %d -> %s", job_id, result.status.string_id, job.attempts, job.state
            )
        except Exception:
            log.exception("job %s: could not record the attempt", job_id)
        self._publish(job_id)
        return job

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
                if self.store.get(job_id).cancel_requested:
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
        inbound = self.store.record_inbound(  # before the answer: a crash can never lose this call
            call_id=incoming.call_id,
            caller=str(incoming.from_.uri),
            callee=str(incoming.to.uri),
            device=device.name,
            tiff_path=part,
        )
        handle = device.start_job()
        self._job_of[handle.id] = inbound.id
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
                self.store.place_inbound_files(
                    inbound.id,
                    tiff_path=rec.placed.tiff,
                    pdf_path=rec.placed.pdf,
                    report_path=rec.placed.report,
                )
            self.store.finish_inbound(inbound.id, final, pages=pages, error=handle.error_text, remote_csi=csi)
        finally:
            if me is not None:
                self._active.pop(me, None)
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
                with contextlib.suppress(Exception):
                    self.store.update_inbound(job_id, pages=status.page_count, remote_csi=status.csi or None)
            self._event(job_id, "page", status.status, {"pages": status.page_count, "csi": status.csi})
        elif handle.history[-2:-1] and handle.history[-2].status is status.status:
            return  # the same status again (e.g. the remote CSI arrived): nothing new to tell
        else:
            self._event(job_id, "status", status.status, {"pages": status.page_count})

    def _event(self, job_id: str, kind: str, status: FaxStatus, payload: dict[str, Any]) -> None:
        try:
            self.store.append_event(job_id, kind, status, payload)  # type: ignore[arg-type]
        except Exception as exc:  # e.g. the job is already final: an event after the end is refused
            log.debug("job %s: event %s not written: %s", job_id, kind, exc)
        self._publish(job_id)

    def _publish(self, job_id: str) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()
        if not self._subscribers:
            return
        seen = self._published.get(job_id, 0)
        for event in self.store.events_for(job_id):
            if event.seq > seen:
                seen = event.seq
                for q in list(self._subscribers):
                    with contextlib.suppress(asyncio.QueueFull):
                        q.put_nowait(event)
        self._published[job_id] = seen
