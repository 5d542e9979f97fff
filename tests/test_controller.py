"""The controller: queue → device → store, inbound into the inbox, retries, cancel; real calls on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from t38.engine import FaxEvent, Negotiated
from tests import docfactory
from vfax.call.device import JobHandle, VirtualFaxDevice
from vfax.call.fax_call import CallOptions
from vfax.call.line import LineConfig
from vfax.documents import Resolution, prepare_fax_tiff, read_tiff_pages
from vfax.service.controller import Controller
from vfax.service.events import CallbackSink, JsonLinesSink
from vfax.status import FaxDevStatus, FaxStatus
from vfax.store.model import InboundState, JobState
from vfax.store.options import OPT_ECM, OPT_TSID
from vfax.store.retry import RetryPolicy
from vfax.store.sqlite import SqliteJobStore


def tiff(tmp: Path, pages: int = 1) -> Path:
    src = docfactory.text_pdf(tmp / f"d{pages}.pdf", pages=pages)
    return prepare_fax_tiff(src, tmp / f"s{pages}.tif", resolution=Resolution.STANDARD).path


FAST_RETRY = RetryPolicy(max_attempts=2, backoff=(0.5, 0.5), jitter=0.0)


async def until(predicate: Any, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.2)


class Service:
    """One controller with one device and its own store and inbox, as `vfax serve` builds it."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        channels: int = 4,
        sinks: list[Any] | None = None,
        call: CallOptions | None = None,
    ) -> None:
        self.tmp = tmp / name
        self.tmp.mkdir()
        self.name = name
        self.channels = channels
        self.sinks = sinks or []
        self.call = call or CallOptions()
        self.store = SqliteJobStore(self.tmp / "vfax.db", policy=FAST_RETRY)

    async def __aenter__(self) -> Service:
        config = LineConfig(name=self.name, channels=self.channels, call=self.call)
        self.device = await VirtualFaxDevice.open(config)
        self.controller = Controller(self.store, [self.device], inbox=self.tmp / "inbox", sinks=self.sinks,
                                     poll_interval=0.2)  # fmt: skip
        await self.controller.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.controller.stop(grace=5)
        await self.device.close()


def test_queued_job_is_sent_and_received_with_one_terminal_event_each(tmp_path: Path) -> None:
    seen: list[Any] = []
    doc = tiff(tmp_path)

    async def scenario() -> Any:
        sinks = [CallbackSink(seen.append), JsonLinesSink(tmp_path / "events.jsonl")]
        async with Service(tmp_path, "a", sinks=sinks) as a, Service(tmp_path, "b") as b:
            job = a.store.submit(doc, b.device.line.uri, options={"tsid": "+1 555 0100"})
            a.controller.wake()
            await until(lambda: a.store.get(job.id).state.is_final, 60)
            await until(
                lambda: (
                    b.store.list_inbound() and b.store.list_inbound()[0].state is not InboundState.RECEIVING
                ),
                30,
            )
            await until(lambda: any(e.type == "terminal" for e in seen), 10)
            return a.store.get(job.id), a.store.events_for(job.id), b.store.list_inbound()[0], b.store

    job, events, fax, b_store = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert (
        job.state is JobState.COMPLETED and job.last_status is FaxStatus.FS_COMPLETED and job.pages_sent == 1
    )
    kinds = [(e.type, e.status) for e in events]
    assert [k for k in kinds if k[0] == "terminal"] == [("terminal", FaxStatus.FS_COMPLETED)]
    assert ("status", FaxStatus.FS_DIALING) in kinds and ("status", FaxStatus.FS_TRANSMITTING) in kinds
    assert ("page", FaxStatus.FS_TRANSMITTING) in kinds
    assert kinds.index(("status", FaxStatus.FS_DIALING)) < kinds.index(("terminal", FaxStatus.FS_COMPLETED))
    # the sinks got the same stream, in order
    assert [e.seq for e in seen if e.job_id == job.id] == [e.seq for e in events]
    lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [x["seq"] for x in lines if x["job_id"] == job.id] == [e.seq for e in events]
    # the far end recorded the reception before answering, and placed the files
    assert fax.state is InboundState.COMPLETED and fax.pages == 1 and fax.remote_csi == "+1 555 0100"
    assert fax.tiff_path and fax.pdf_path and len(read_tiff_pages(fax.tiff_path)) == 1
    assert [e.type for e in b_store.events_for(fax.id)].count("terminal") == 1


def test_busy_destination_is_retried_then_failed(tmp_path: Path) -> None:
    doc = tiff(tmp_path)

    async def scenario() -> Any:
        async with Service(tmp_path, "a") as a, Service(tmp_path, "full", channels=0) as full:
            job = a.store.submit(doc, full.device.line.uri)
            a.controller.wake()
            await until(lambda: a.store.get(job.id).state.is_final, 60)
            return a.store.get(job.id), a.store.events_for(job.id)

    job, events = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert job.state is JobState.FAILED and job.attempts == 2 and job.last_status is FaxStatus.FS_BUSY
    assert [e.type for e in events].count("terminal") == 1
    assert any(e.payload.get("retry") for e in events if e.type == "status")  # the first attempt was retried


def test_cancel_before_and_during_the_call(tmp_path: Path) -> None:
    doc = tiff(tmp_path, pages=2)

    async def scenario() -> Any:
        async with Service(tmp_path, "a", channels=1) as a, Service(tmp_path, "b") as b:
            later = a.store.submit(doc, b.device.line.uri, not_before=4e9)  # scheduled far ahead
            a.store.cancel(later.id)
            now = a.store.submit(doc, b.device.line.uri)
            a.controller.wake()
            await until(
                lambda: any(e.status is FaxStatus.FS_TRANSMITTING for e in a.store.events_for(now.id)), 30
            )
            a.store.cancel(now.id)
            a.controller.wake()
            await until(lambda: a.store.get(now.id).state.is_final, 30)
            return a.store.get(later.id), a.store.get(now.id), a.store.events_for(now.id)

    later, now, events = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert later.state is JobState.CANCELLED and later.attempts == 0
    assert now.state is JobState.CANCELLED and now.last_status is FaxStatus.FS_USER_ABORT
    assert [e.type for e in events].count("terminal") == 1


def test_disk_full_keeps_the_received_pages_and_places_them_at_the_next_start(
    tmp_path: Path, monkeypatch: Any
) -> None:
    import errno

    from vfax import storage

    doc = tiff(tmp_path)
    real_commit = storage.commit_file

    def disk_full(tmp: Path, dst: Path) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    async def scenario() -> Any:
        async with Service(tmp_path, "a") as a, Service(tmp_path, "b") as b:
            monkeypatch.setattr(storage, "commit_file", disk_full)
            job = a.store.submit(doc, b.device.line.uri)
            a.controller.wake()
            await until(lambda: a.store.get(job.id).state.is_final, 60)
            await until(lambda: b.store.list_inbound() and b.store.list_inbound()[0].finished_at, 30)
            fax = b.store.list_inbound()[0]
            parts = [len(read_tiff_pages(p)) for p in (b.tmp / "inbox").glob(".rx-*.tif.part")]
            placed_before = list((b.tmp / "inbox").glob("fax-*.tif"))
            monkeypatch.setattr(storage, "commit_file", real_commit)  # the disk has room again
            await b.controller.stop(grace=1)  # a restart: one controller per node id at a time
            restarted = Controller(b.store, [b.device], inbox=b.tmp / "inbox")
            await restarted.start()
            await restarted.stop(grace=1)
            return (
                a.store.get(job.id),
                fax,
                parts,
                placed_before,
                b.store.get_inbound(fax.id),
                b.tmp / "inbox",
            )

    job, fax, parts, placed_before, after, inbox = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert job.state is JobState.COMPLETED  # the fax itself went through: the sender is told the truth
    assert fax.pages == 1 and "not placed" in fax.error
    assert parts == [1]  # one part file, holding the page: it survived the full disk
    assert placed_before == []
    assert after.tiff_path and after.tiff_path.endswith(".tif") and not after.tiff_path.endswith(".part")
    assert len(read_tiff_pages(after.tiff_path)) == 1 and not list(inbox.glob(".rx-*.tif.part"))


def test_a_retried_job_reports_the_pages_of_each_attempt(tmp_path: Path) -> None:
    """Attempt 1 is cut after page 1 by the far end; attempt 2 must report its own pages 1 and 2."""
    doc = tiff(tmp_path, pages=2)

    async def scenario() -> Any:
        async with Service(tmp_path, "a") as a, Service(tmp_path, "b") as b:
            original = b.device.on_status
            cut: list[int] = []

            def cut_first_call_after_page_one(handle: Any, status: Any) -> None:
                assert original is not None
                original(handle, status)
                if status.page_count == 1 and not cut:
                    cut.append(handle.id)
                    asyncio.get_running_loop().call_later(
                        2.0, lambda: asyncio.ensure_future(b.device.abort(handle))
                    )

            b.device.on_status = cut_first_call_after_page_one
            job = a.store.submit(doc, b.device.line.uri)
            a.controller.wake()
            await until(lambda: a.store.get(job.id).state.is_final, 150)
            return a.store.get(job.id), a.store.events_for(job.id)

    job, events = asyncio.run(asyncio.wait_for(scenario(), 200))
    assert job.state is JobState.COMPLETED and job.attempts == 2 and job.pages_sent == 2
    retry_at = next(i for i, e in enumerate(events) if e.type == "status" and e.payload.get("retry"))
    before = [e.payload["pages"] for e in events[:retry_at] if e.type == "page"]
    after = [e.payload["pages"] for e in events[retry_at:] if e.type == "page"]
    assert before == [1] and after == [1, 2], (before, after)


class DcsSeen:
    """What each call of a device negotiated in phase B (the DCS: bit rate and ECM), as its engine
    reported it; optionally cuts the first reception right after its DCS (a fax-phase failure)."""

    def __init__(self, device: VirtualFaxDevice, *, cut_first: bool = False) -> None:
        self.device = device
        self.cut_first = cut_first
        self.negotiated: list[Negotiated] = []
        self.outcomes: list[Any] = []  # the CallOutcome of every call of this device, in order
        self._hooked: set[int] = set()
        self._cuts: set[asyncio.Task[None]] = set()
        self._original = device.on_status
        device.on_status = self._status

    def _status(self, handle: JobHandle, status: FaxDevStatus) -> None:
        assert self._original is not None
        self._original(handle, status)
        call = handle.call
        if call is not None and handle.id not in self._hooked:
            self._hooked.add(handle.id)
            engine_hook = call.on_event

            def on_event(c: Any, event: FaxEvent) -> None:
                if engine_hook is not None:
                    engine_hook(c, event)
                if isinstance(event, Negotiated):
                    self.negotiated.append(event)
                    if self.cut_first and len(self.negotiated) == 1:  # phase B done: hang up now
                        cut = asyncio.ensure_future(self.device.abort(handle))
                        self._cuts.add(cut)
                        cut.add_done_callback(self._cuts.discard)

            call.on_event = on_event
        if status.status.is_terminal and handle.outcome is not None:
            self.outcomes.append(handle.outcome)


def test_fax_phase_failure_is_retried_at_9600_without_ecm_on_the_wire(tmp_path: Path) -> None:
    """Attempt 1 is cut by the far end right after phase B; the retry must really run at 9600 bit/s
    with ECM off: the far end's engine sees that DCS, and both call reports say so."""
    doc = tiff(tmp_path)

    async def scenario() -> Any:
        async with Service(tmp_path, "a") as a, Service(tmp_path, "b") as b:
            far = DcsSeen(b.device, cut_first=True)
            near = DcsSeen(a.device)
            job = a.store.submit(doc, b.device.line.uri, options={OPT_TSID: "+1 555 0100"})
            a.controller.wake()
            await until(lambda: a.store.get(job.id).state.is_final, 150)
            await until(lambda: len(b.store.list_inbound()) == 2 and all(
                f.state is not InboundState.RECEIVING for f in b.store.list_inbound()), 30)  # fmt: skip
            return a.store.get(job.id), a.store.events_for(job.id), far, near, b.store.list_inbound()

    job, events, far, near, inbound = asyncio.run(asyncio.wait_for(scenario(), 200))
    retry = next(e for e in events if e.type == "status" and e.payload.get("retry"))
    assert "9600 bit/s, ECM off" in retry.payload["reason"]
    assert job.state is JobState.COMPLETED and job.attempts == 2 and job.pages_sent == 1
    # the DCS the receiving engine got: attempt 1 at the default, attempt 2 at the fall-back
    assert [(n.bit_rate, n.ecm) for n in far.negotiated] == [(14400, True), (9600, False)]
    assert [(n.bit_rate, n.ecm) for n in near.negotiated] == [(14400, True), (9600, False)]
    # the second call's reports, both ends: phase E and the page itself at 9600 without ECM
    sent = near.outcomes[-1]
    assert sent.ok and (sent.result.bit_rate, sent.result.ecm) == (9600, False)
    assert [(p["bit_rate"], p["ecm"]) for p in sent.report["pages"]] == [(9600, False)]
    done = next(f for f in inbound if f.state is InboundState.COMPLETED)
    assert done.pages == 1 and done.report_path
    report = json.loads(Path(done.report_path).read_text())
    assert (report["result"]["bit_rate"], report["result"]["ecm"]) == (9600, False)
    assert [(p["bit_rate"], p["ecm"]) for p in report["pages"]] == [(9600, False)]


def test_the_device_configured_ecm_and_bit_rate_apply_unless_the_job_sets_them(tmp_path: Path) -> None:
    """A device configured with ECM off and 9600 bit/s sends that when the job says nothing; a job's
    own ECM option wins over the device's."""
    doc = tiff(tmp_path)

    async def scenario() -> Any:
        slow = CallOptions(ecm=False, max_bit_rate=9600)
        async with Service(tmp_path, "a", call=slow) as a, Service(tmp_path, "b") as b:
            far = DcsSeen(b.device)
            plain = a.store.submit(doc, b.device.line.uri, options={OPT_TSID: "plain"})
            ecm = a.store.submit(doc, b.device.line.uri, options={OPT_TSID: "ecm", OPT_ECM: True})
            a.controller.wake()
            await until(lambda: all(a.store.get(j.id).state.is_final for j in (plain, ecm)), 120)
            return [a.store.get(j.id) for j in (plain, ecm)], far

    jobs, far = asyncio.run(asyncio.wait_for(scenario(), 180))
    assert [j.state for j in jobs] == [JobState.COMPLETED, JobState.COMPLETED]
    seen = {n.remote_ident: (n.bit_rate, n.ecm) for n in far.negotiated}
    assert seen == {"plain": (9600, False), "ecm": (9600, True)}
