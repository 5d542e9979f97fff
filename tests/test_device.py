"""VirtualFaxDevice, driven as the Fax Service drives an FSP: every status path on real loopback calls."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from sip.useragent import IncomingInvite
from tests import docfactory
from vfax.call.device import DeviceError, FaxReceive, FaxSend, JobHandle, VirtualFaxDevice
from vfax.call.fax_call import CallOptions
from vfax.call.line import LineConfig
from vfax.documents import Resolution, prepare_fax_tiff, read_tiff_pages
from vfax.status import FaxDevStatus, FaxStatus


def tiff(tmp: Path, pages: int = 1) -> Path:
    src = docfactory.text_pdf(tmp / f"d{pages}.pdf", pages=pages)
    return prepare_fax_tiff(src, tmp / f"s{pages}.tif", resolution=Resolution.STANDARD).path


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 180))


class Far:
    """The far end: a device whose controller answers offered calls (or not) as the test says."""

    def __init__(
        self, device: VirtualFaxDevice, inbox: Path, *, answer: bool = True, delay: float = 0.0
    ) -> None:
        self.device = device
        self.inbox = inbox
        self.answer = answer
        self.delay = delay
        self.handles: list[JobHandle] = []
        self.statuses: list[FaxDevStatus] = []
        self.finished = asyncio.Event()
        device.on_offered = self.offered
        device.on_status = lambda h, s: self.statuses.append(s)

    async def offered(self, device: VirtualFaxDevice, call: IncomingInvite) -> None:
        if not self.answer:
            await asyncio.sleep(30)  # ring, never answer
            return
        if self.delay:
            await call.ringing()
            await asyncio.sleep(self.delay)
        handle = device.start_job()
        self.handles.append(handle)
        await device.receive(handle, call, FaxReceive(self.inbox, csid="FAR END"))
        device.end_job(handle)
        self.finished.set()


async def pair(tmp: Path, far_channels: int = 4, **far_kw: Any) -> tuple[VirtualFaxDevice, Far]:
    near = await VirtualFaxDevice.open(LineConfig(name="near", call=CallOptions(ring_timeout=3)))
    far_dev = await VirtualFaxDevice.open(LineConfig(name="far", channels=far_channels))
    return near, Far(far_dev, tmp / "inbox", **far_kw)


async def send(
    near: VirtualFaxDevice, far: Far, doc: Path, **kw: Any
) -> tuple[JobHandle, list[Any], list[str]]:
    statuses: list[Any] = []
    callbacks: list[str] = []
    near.on_status = lambda h, s: statuses.append(s.status)
    handle = near.start_job()
    await near.send(handle, FaxSend(doc, far.device.line.uri, caller_number="+1 555 0100", **kw),
                    callback=lambda h, call_id: callbacks.append(call_id))  # fmt: skip
    return handle, statuses, callbacks


def test_success_reports_every_status_and_the_send_callback(tmp_path: Path) -> None:
    async def scenario() -> Any:
        near, far = await pair(tmp_path)
        try:
            handle, statuses, callbacks = await send(near, far, tiff(tmp_path))
            await asyncio.wait_for(far.finished.wait(), 30)
            return handle, statuses, callbacks, far
        finally:
            await near.close()
            await far.device.close()

    handle, statuses, callbacks, far = run(scenario())
    assert statuses[0] is FaxStatus.FS_INITIALIZING and statuses[-1] is FaxStatus.FS_COMPLETED
    assert FaxStatus.FS_DIALING in statuses and FaxStatus.FS_TRANSMITTING in statuses
    assert statuses.index(FaxStatus.FS_DIALING) < statuses.index(FaxStatus.FS_TRANSMITTING)
    assert len(callbacks) == 1 and "@" in callbacks[0]  # FaxSendCallback once, with the call id
    final = handle.device.report_status(handle)
    assert final.page_count == 1 and final.csi == "FAR END" and final.string_id == "completed"
    rx = [s.status for s in far.statuses]
    assert rx[0] is FaxStatus.FS_INITIALIZING and FaxStatus.FS_ANSWERED in rx and FaxStatus.FS_RECEIVING in rx
    assert rx[-1] is FaxStatus.FS_COMPLETED and far.statuses[-1].caller_id.startswith("sip:")
    assert far.statuses[-1].csi == "+1 555 0100"


def test_a_call_beyond_the_channel_limit_is_busy(tmp_path: Path) -> None:
    async def scenario() -> Any:
        near, far = await pair(tmp_path, far_channels=0)
        try:
            handle, _, _ = await send(near, far, tiff(tmp_path))
            return handle
        finally:
            await near.close()
            await far.device.close()

    handle = run(scenario())
    assert handle.status.status is FaxStatus.FS_BUSY and handle.status.error_code == 486


def test_ring_without_answer_is_no_answer(tmp_path: Path) -> None:
    async def scenario() -> Any:
        near, far = await pair(tmp_path, answer=False)
        try:
            handle, _, callbacks = await send(near, far, tiff(tmp_path))
            return handle, callbacks
        finally:
            await near.close()
            await far.device.close()

    handle, callbacks = run(scenario())
    assert handle.status.status is FaxStatus.FS_NO_ANSWER and len(callbacks) == 1


def test_unknown_user_at_the_proxy_is_a_bad_address(tmp_path: Path, kamailio: Any) -> None:
    async def scenario() -> Any:
        server = f"{kamailio.host}:{kamailio.udp_port}"
        near = await VirtualFaxDevice.open(
            LineConfig(name="near", server=server, user="1004", password=kamailio.users["1004"])
        )
        try:
            handle = near.start_job()
            await near.send(handle, FaxSend(tiff(tmp_path), f"sip:9999@{server}"))
            return handle
        finally:
            await near.close()

    handle = run(scenario())
    assert handle.status.status is FaxStatus.FS_BAD_ADDRESS and handle.status.error_code == 404


@pytest.mark.parametrize("phase", ["dialing", "transmitting"])
def test_abort_while_sending_ends_with_user_abort(tmp_path: Path, phase: str) -> None:
    async def scenario() -> Any:
        near, far = await pair(tmp_path, delay=3.0 if phase == "dialing" else 0.0)
        try:
            statuses: list[FaxStatus] = []
            handle = near.start_job()

            def on_status(h: JobHandle, s: FaxDevStatus) -> None:
                statuses.append(s.status)
                if s.status is FaxStatus.FS_DIALING and phase == "dialing":
                    asyncio.get_running_loop().call_later(1.0, lambda: asyncio.ensure_future(near.abort(h)))
                if s.status is FaxStatus.FS_TRANSMITTING and phase == "transmitting":
                    asyncio.get_running_loop().call_later(2.0, lambda: asyncio.ensure_future(near.abort(h)))

            near.on_status = on_status
            await near.send(handle, FaxSend(tiff(tmp_path), far.device.line.uri))
            near.end_job(handle)
            near.end_job(handle)  # safe twice
            return handle, statuses
        finally:
            await near.close()
            await far.device.close()

    handle, statuses = run(scenario())
    assert handle.status.status is FaxStatus.FS_USER_ABORT
    if phase == "dialing":
        assert FaxStatus.FS_TRANSMITTING not in statuses
    else:
        assert FaxStatus.FS_TRANSMITTING in statuses
    with pytest.raises(DeviceError):
        asyncio.run(handle.device.send(handle, FaxSend(tiff(tmp_path), "sip:x@127.0.0.1:9")))


def test_abort_while_receiving_keeps_the_pages(tmp_path: Path) -> None:
    doc = tiff(tmp_path, pages=2)

    async def scenario() -> Any:
        near, far = await pair(tmp_path)

        def on_status(h: JobHandle, s: FaxDevStatus) -> None:
            far.statuses.append(s)
            if s.page_count == 1 and not h.aborted:
                h.aborted = True
                asyncio.get_running_loop().call_later(2.0, lambda: asyncio.ensure_future(far.device.abort(h)))

        far.device.on_status = on_status
        try:
            handle, _, _ = await send(near, far, doc)
            await asyncio.wait_for(far.finished.wait(), 30)
            return handle, far.handles[0]
        finally:
            await near.close()
            await far.device.close()

    sender, receiver = run(scenario())
    assert receiver.status.status is FaxStatus.FS_USER_ABORT and receiver.status.page_count == 1
    assert receiver.reception is not None and receiver.reception.placed is not None
    assert receiver.reception.placed.tiff is not None
    assert len(read_tiff_pages(receiver.reception.placed.tiff)) == 1
    # the sender saw the far end hang up in the middle of page 2
    assert sender.status.status is FaxStatus.FS_DISCONNECTED and sender.status.page_count == 1


def test_offered_call_nobody_takes_gets_480(tmp_path: Path) -> None:
    async def scenario() -> Any:
        near = await VirtualFaxDevice.open(LineConfig(name="near"))
        far = await VirtualFaxDevice.open(LineConfig(name="far"))  # no on_offered: nobody takes calls
        try:
            handle = near.start_job()
            await near.send(handle, FaxSend(tiff(tmp_path), far.line.uri))
            return handle
        finally:
            await near.close()
            await far.close()

    handle = run(scenario())
    assert handle.status.error_code == 480 and handle.status.status is FaxStatus.FS_NO_ANSWER


def test_a_final_response_outside_the_sip_classes_is_a_fatal_error() -> None:
    from vfax.call.fax_call import CallOutcome

    def outcome(code: int) -> CallOutcome:
        return CallOutcome(False, code, "", None, "none", "", 0.0)

    assert outcome(799).status is FaxStatus.FS_FATAL_ERROR
    assert outcome(486).status is FaxStatus.FS_BUSY


@pytest.mark.parametrize(
    ("to", "server", "expected"),
    [
        ("2000", "pbx.example:5070", "sip:2000@pbx.example:5070"),
        ("sip:2000@10.0.0.1", None, "sip:2000@10.0.0.1"),
        ("2000", None, None),
        ("sip:bad uri@", None, None),
        ("20 00", "pbx.example", "sip:2000@pbx.example"),  # a typed number: separators dropped
        ("20 0x", "pbx.example", None),
        ("", "pbx.example", None),
    ],
)
def test_destinations_resolve_through_the_server_or_are_refused(
    to: str, server: str | None, expected: str | None
) -> None:
    from vfax.call.line import BadDestination, dial_uri

    if expected is None:
        with pytest.raises(BadDestination):
            dial_uri(to, server)
    else:
        assert dial_uri(to, server) == expected


def test_an_undiallable_destination_is_a_bad_address(tmp_path: Path) -> None:
    async def scenario() -> Any:
        near = await VirtualFaxDevice.open(LineConfig(name="near"))
        try:
            handle = near.start_job()
            await near.send(handle, FaxSend(tiff(tmp_path), "2000"))  # an extension, but no server
            return handle
        finally:
            await near.close()

    handle = run(scenario())
    assert handle.status.status is FaxStatus.FS_BAD_ADDRESS and "no server" in handle.error_text
