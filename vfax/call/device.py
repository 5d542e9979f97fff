"""VirtualFaxDevice: a fax line driven the way the Windows Fax Service drives a Fax Service Provider.

The controller calls ``start_job`` (FaxDevStartJob), then ``send`` (FaxDevSend) or ``receive``
(FaxDevReceive), may call ``report_status`` (FaxDevReportStatus) and ``abort``
(FaxDevAbortOperation) at any moment, and ends with ``end_job`` (FaxDevEndJob). The device reports
every status change (FS_DIALING, FS_TRANSMITTING, FS_RECEIVING, FS_COMPLETED, FS_BUSY, ...) to
``on_status``, and calls the FaxSendCallback once the outgoing call exists, with its call id.

Offered calls (the line "rings") go to ``on_offered``; the controller answers them by calling
``start_job`` + ``receive``. An offered call nobody takes is rejected with 480.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from sip.useragent import IncomingInvite
from t38.engine import FaxEvent, Negotiated, PageDone
from vfax.call.fax_call import CallOptions, CallOutcome, FaxCall
from vfax.call.line import BadDestination, FaxLine, LineConfig, Reception
from vfax.call.media import T38Policy
from vfax.inbox import Inbox
from vfax.status import FaxDevStatus, FaxStatus

log = logging.getLogger("vfax.device")

_handles = itertools.count(1)


class DeviceError(RuntimeError):
    """The controller used the device API wrongly (an unknown or ended job, a second send, ...)."""


@dataclass(frozen=True)
class FaxSend:
    """FAX_SEND: what to send and how (the document is a prepared TIFF-F).

    None means "the device's configured value", so a device set up with ECM off or a lower bit rate
    keeps it unless the job says otherwise.
    """

    document: Path
    destination: str  # sip:USER@HOST[:PORT], or USER when the line has a registrar
    caller_number: str = ""  # TSID, sent as T.30 TSI
    sender_name: str = ""
    recipient_name: str = ""
    ecm: bool | None = None  # None: the device's
    max_bit_rate: int | None = None  # a ceiling (the device's own still applies); None: the device's
    page_header: str | None = None
    t38: T38Policy | None = None  # None: the device's policy

    def call_options(self, base: CallOptions) -> CallOptions:
        """The device's call options with this job's settings on top. The bit rate is only ever
        lowered: a device configured for 7200 bit/s (a poor line) is not raised by a 9600 fall-back."""
        rate = base.max_bit_rate if self.max_bit_rate is None else min(self.max_bit_rate, base.max_bit_rate)
        return replace(
            base,
            t38=self.t38 or base.t38,
            ecm=base.ecm if self.ecm is None else self.ecm,
            max_bit_rate=rate,
            ident=self.caller_number[:20] or base.ident,
            page_header=self.page_header or base.page_header,
        )


@dataclass(frozen=True)
class FaxReceive:
    """FAX_RECEIVE: where a received fax goes and how we answer."""

    inbox: Path
    csid: str = ""  # our CSID, sent as T.30 CSI
    receiving_number: str = ""
    part_file: Path | None = None  # where the reception is written while it runs (recorded beforehand)


@dataclass
class JobHandle:
    """One job on one device (the HANDLE of FaxDevStartJob)."""

    id: int
    device: VirtualFaxDevice
    status: FaxDevStatus
    kind: str = ""  # "send" or "receive" once started
    call: FaxCall | None = None
    outcome: CallOutcome | None = None
    reception: Reception | None = None
    ended: bool = False
    aborted: bool = False
    error_text: str = ""  # why the job failed, in words (error_code holds the T.30 or SIP number)
    history: list[FaxDevStatus] = field(default_factory=list)


StatusCallback = Callable[[JobHandle, FaxDevStatus], None]
SendCallback = Callable[[JobHandle, str], None]


class VirtualFaxDevice:
    def __init__(self, line: FaxLine, *, name: str | None = None) -> None:
        self.line = line
        self.name = name or line.config.name
        self.jobs: dict[int, JobHandle] = {}
        self._background: set[asyncio.Task[None]] = set()
        #: Every status change of every job (the FAX_DEV_STATUS stream to the controller).
        self.on_status: StatusCallback | None = None
        #: An offered call; the controller must start_job + receive, or the call gets 480.
        self.on_offered: Callable[[VirtualFaxDevice, IncomingInvite], Awaitable[None]] | None = None
        line.on_incoming = self._offered

    @classmethod
    async def open(cls, config: LineConfig, *, register: bool = True) -> VirtualFaxDevice:
        line = await FaxLine.open(config)
        if register and config.server:
            result = await line.register()
            if not result.ok:
                log.warning("%s: registration failed: %s %s", config.name, result.status, result.reason)
        return cls(line)

    async def close(self) -> None:
        for handle in list(self.jobs.values()):
            if not handle.ended and handle.call is not None:
                await self.abort(handle)
        await self.line.close()

    # --- FaxDevStartJob / FaxDevEndJob ----------------------------------------------------------------
    def start_job(self) -> JobHandle:
        handle = JobHandle(next(_handles), self, FaxDevStatus(FaxStatus.FS_INITIALIZING, at=time.time()))
        self.jobs[handle.id] = handle
        self._report(handle, FaxStatus.FS_INITIALIZING)
        return handle

    def end_job(self, handle: JobHandle) -> None:
        """Release the job. Safe to call twice; a job still in a call is aborted first (in the
        background: FaxDevEndJob does not wait)."""
        if handle.ended:
            return
        if handle.call is not None and handle.outcome is None and handle.reception is None:
            task = asyncio.ensure_future(self.abort(handle))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        handle.ended = True
        self.jobs.pop(handle.id, None)

    # --- FaxDevSend ---------------------------------------------------------------------------------
    async def send(
        self, handle: JobHandle, fax: FaxSend, callback: SendCallback | None = None
    ) -> FaxDevStatus:
        """Place the call and send; returns the final status (also reported to ``on_status``)."""
        self._check(handle)
        handle.kind = "send"
        options = fax.call_options(self.line.config.call)
        options.fax_config()  # raises ValueError for a bad TSID or bit rate, before any call

        self._report(handle, FaxStatus.FS_DIALING)
        if handle.aborted:
            return self._finish(handle, None)
        try:
            outcome = await self.line.send(
                fax.document, fax.destination, options=options, on_call=self._attach(handle, callback)
            )
        except BadDestination as exc:
            self._report(handle, FaxStatus.FS_BAD_ADDRESS, error=str(exc))
            return handle.status
        except RuntimeError as exc:  # all channels busy
            self._report(handle, FaxStatus.FS_LINE_UNAVAILABLE, error=str(exc))
            return handle.status
        handle.outcome = outcome
        return self._finish(handle, outcome)

    # --- FaxDevReceive ------------------------------------------------------------------------------
    async def receive(self, handle: JobHandle, call: IncomingInvite, fax: FaxReceive) -> FaxDevStatus:
        """Answer the offered call and receive into ``fax.inbox``; returns the final status."""
        self._check(handle)
        handle.kind = "receive"
        options = replace(self.line.config.call, ident=fax.csid[:20] or self.line.config.call.ident)
        options.fax_config()
        handle.status = replace(
            handle.status, caller_id=str(call.from_.uri), routing_info=fax.receiving_number
        )

        reception = await self.line.receive(
            call, Inbox(fax.inbox), options, on_call=self._attach(handle, None), part=fax.part_file
        )
        handle.reception = reception
        handle.outcome = reception.outcome
        return self._finish(handle, reception.outcome)

    # --- FaxDevReportStatus / FaxDevAbortOperation -------------------------------------------------
    def report_status(self, handle: JobHandle) -> FaxDevStatus:
        return handle.status

    async def abort(self, handle: JobHandle) -> None:
        """End the operation now: CANCEL while dialing, BYE while transmitting or receiving. The job
        ends with FS_USER_ABORT; pages already received are kept."""
        handle.aborted = True
        if handle.call is not None:
            await handle.call.abort("user abort")

    # --- internals ----------------------------------------------------------------------------------
    def _attach(self, handle: JobHandle, callback: SendCallback | None) -> Callable[[FaxCall], None]:
        """The hook that ties a new call to its job: progress (FaxSendCallback, statuses) and pages."""

        def on_call(call: FaxCall) -> None:
            handle.call = call
            call.on_progress = lambda c, what: self._progress(handle, what, callback)
            call.on_event = lambda c, e: self._engine_event(handle, e)

        return on_call

    def _check(self, handle: JobHandle) -> None:
        if handle.ended or self.jobs.get(handle.id) is not handle:
            raise DeviceError(f"job {handle.id} is not an active job of {self.name}")
        if handle.kind:
            raise DeviceError(f"job {handle.id} already did a {handle.kind}")

    def _report(
        self,
        handle: JobHandle,
        status: FaxStatus,
        *,
        error: str = "",
        code: int = 0,
        pages: int | None = None,
    ) -> None:
        if error:
            handle.error_text = error
        s = replace(
            handle.status,
            status=status,
            at=time.time(),
            page_count=handle.status.page_count if pages is None else pages,
            error_code=code or handle.status.error_code,
            string_id=status.string_id,
        )
        handle.status = s
        handle.history.append(s)
        if self.on_status is not None:
            try:
                self.on_status(handle, s)
            except Exception:
                log.exception("%s: status callback failed", self.name)

    def _progress(self, handle: JobHandle, what: str, callback: SendCallback | None) -> None:
        if what == "dialing" and callback is not None and handle.call is not None:
            callback(handle, handle.call.call_id)  # FaxSendCallback: the call exists
        elif what == "answered":
            self._report(
                handle, FaxStatus.FS_TRANSMITTING if handle.kind == "send" else FaxStatus.FS_ANSWERED
            )
            if handle.kind == "receive":
                self._report(handle, FaxStatus.FS_RECEIVING)

    def _engine_event(self, handle: JobHandle, event: FaxEvent) -> None:
        if isinstance(event, Negotiated):
            handle.status = replace(handle.status, csi=event.remote_ident)
            self._report(handle, handle.status.status)
        elif isinstance(event, PageDone):
            self._report(handle, handle.status.status, pages=event.page)

    def _finish(self, handle: JobHandle, outcome: CallOutcome | None) -> FaxDevStatus:
        if outcome is None:
            self._report(handle, FaxStatus.FS_USER_ABORT)
            return handle.status
        status = FaxStatus.FS_USER_ABORT if handle.aborted and not outcome.ok else outcome.status
        pages = outcome.result.pages if outcome.result else 0
        error = "" if outcome.ok else outcome.end_reason
        if outcome.result is not None:
            code = outcome.result.code
        else:
            code = outcome.sip_status if outcome.sip_status and outcome.sip_status >= 300 else 0
        if outcome.result is not None and outcome.result.remote_ident:
            handle.status = replace(handle.status, csi=outcome.result.remote_ident)
        self._report(handle, status, error=error, code=code, pages=pages)
        return handle.status

    async def _offered(self, incoming: IncomingInvite) -> None:
        if self.on_offered is None:
            await incoming.reject(480, "Temporarily Unavailable")
            return
        await self.on_offered(self, incoming)
        if not incoming.answered:
            await incoming.reject(480, "Temporarily Unavailable")
