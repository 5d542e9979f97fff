"""The fax engine in virtual time: two spandsp sessions back to back, the receiver's result is the truth."""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import pytest
from PIL import ImageChops

from t38 import spandsp
from t38.engine import FaxConfig, FaxResult, FaxSession, Media, PageDone, T30Message
from t38.virtual_line import VirtualLink, run_back_to_back
from tests.faxpages import make_fax_tiff, tiff_pages


def _pair(tmp: Path, src: Path, media: Media, ecm: bool = True, **kw) -> tuple[FaxSession, FaxSession]:
    cfg = FaxConfig(ecm=ecm, ident="SENDER", **kw)
    tx = FaxSession(calling=True, send_file=src, config=cfg, media=media, name="tx")
    rx = FaxSession(
        calling=False,
        receive_file=tmp / "rx.tif",
        config=FaxConfig(ecm=ecm, ident="RECEIVER", **kw),
        media=media,
        name="rx",
    )
    return tx, rx


def _assert_identical(sent: Path, received: Path) -> None:
    a, b = tiff_pages(sent), tiff_pages(received)
    assert len(a) == len(b)
    for n, (pa, pb) in enumerate(zip(a, b, strict=True), 1):
        assert pa.size == pb.size, f"page {n} size"
        assert ImageChops.difference(pa.convert("L"), pb.convert("L")).getbbox() is None, f"page {n} differs"


@pytest.mark.parametrize("media", [Media.AUDIO, Media.T38])
@pytest.mark.parametrize("resolution", ["standard", "fine"])
def test_three_pages_with_ecm_arrive_pixel_identical(tmp_path: Path, media: Media, resolution: str) -> None:
    src = make_fax_tiff(tmp_path / "in.tif", pages=3, resolution=resolution)
    tx, rx = _pair(tmp_path, src, media)
    r = run_back_to_back(tx, rx)
    tx.close()
    rx.close()
    assert r.answering.ok and r.calling.ok
    assert r.answering.pages == 3 and r.answering.ecm
    assert r.answering.remote_ident == "SENDER" and r.calling.remote_ident == "RECEIVER"
    assert r.answering.media == media.value
    _assert_identical(src, tmp_path / "rx.tif")


@pytest.mark.parametrize("media", [Media.AUDIO, Media.T38])
def test_three_pages_without_ecm_arrive_complete(tmp_path: Path, media: Media) -> None:
    src = make_fax_tiff(tmp_path / "in.tif", pages=3)
    tx, rx = _pair(tmp_path, src, media, ecm=False)
    r = run_back_to_back(tx, rx)
    tx.close()
    rx.close()
    assert r.answering.ok and r.answering.pages == 3 and not r.answering.ecm
    assert len(tiff_pages(tmp_path / "rx.tif")) == 3
    names = [m.name for m in rx.timeline]
    # The T.30 ladder of a clean 3-page non-ECM fax, named after the standard (T.30 §5.3.6).
    for expected in ("DIS", "DCS", "CFR", "MPS", "MCF", "EOP", "DCN"):
        assert expected in names


def test_events_report_each_page_and_one_result(tmp_path: Path) -> None:
    src = make_fax_tiff(tmp_path / "in.tif", pages=3)
    tx, rx = _pair(tmp_path, src, Media.T38)
    seen: list[tuple[str, object]] = []
    run_back_to_back(tx, rx, on_event=lambda s, e: seen.append((s.name, e)))
    tx.close()
    rx.close()
    rx_pages = [e.page for n, e in seen if n == "rx" and isinstance(e, PageDone)]
    assert rx_pages == [1, 2, 3]
    assert sum(1 for n, e in seen if n == "rx" and isinstance(e, FaxResult)) == 1
    assert any(isinstance(e, T30Message) and e.name == "DCS" for _, e in seen)


def test_receiver_with_nobody_calling_fails_truthfully(tmp_path: Path) -> None:
    """A dead line must end in a failure with a T.30 reason, never in a success."""
    src = make_fax_tiff(tmp_path / "in.tif", pages=1)
    tx, rx = _pair(tmp_path, src, Media.T38)
    dead = VirtualLink()
    dead.send = lambda now, item: None  # type: ignore[method-assign]
    r = run_back_to_back(tx, rx, forward=dead, max_seconds=120)
    tx.close()
    rx.close()
    assert not r.answering.ok and not r.calling.ok
    assert r.answering.pages == 0
    assert r.answering.text  # a reason from spandsp, e.g. timed out waiting
    # no DCS was ever exchanged: the result reports no bit rate, not our configured 14,400
    for result in (r.answering, r.calling):
        assert (result.bit_rate, result.ecm, result.y_resolution) == (0, False, 0), result
    assert r.calling.pages_in_file == 1  # what the document holds is still known


def test_close_mid_fax_keeps_pages_and_reports_call_dropped(tmp_path: Path) -> None:
    src = make_fax_tiff(tmp_path / "in.tif", pages=3)
    tx, rx = _pair(tmp_path, src, Media.T38)
    run_back_to_back(tx, rx, max_seconds=30)  # enough for about one page, not three
    assert not rx.done or rx.result is not None
    pages_before = len(rx.pages)
    tx.close()
    rx.close()
    assert rx.result is not None and not rx.result.ok
    assert 1 <= pages_before < 3
    assert rx.result.pages == pages_before
    assert len(tiff_pages(tmp_path / "rx.tif")) == pages_before


def test_switch_to_t38_before_t30_starts(tmp_path: Path) -> None:
    """The usual re-INVITE moment: audio for a fraction of a second, then T.38 for the whole fax."""
    src = make_fax_tiff(tmp_path / "in.tif", pages=2)
    tx, rx = _pair(tmp_path, src, Media.AUDIO)
    for _ in range(10):  # 200 ms of CNG/silence
        rx.audio_rx(tx.audio_tx())
        tx.audio_rx(rx.audio_tx())
    tx.switch_to_t38()
    rx.switch_to_t38()
    r = run_back_to_back(tx, rx)
    tx.close()
    rx.close()
    assert r.answering.ok and r.answering.pages == 2 and r.answering.media == "t38"
    _assert_identical(src, tmp_path / "rx.tif")


def test_switch_to_t38_mid_fax_resumes_after_confirmed_pages(tmp_path: Path) -> None:
    """A late re-INVITE restarts T.30 in T.38: no page is lost or sent twice, parts are kept apart."""
    src = make_fax_tiff(tmp_path / "in.tif", pages=3)
    tx, rx = _pair(tmp_path, src, Media.AUDIO)
    steps = 0
    while len(tx.pages) < 1 and steps < 50 * 120:
        rx.audio_rx(tx.audio_tx())
        tx.audio_rx(rx.audio_tx())
        steps += 1
    # let the receiver see the end of the page exchange, then both move to T.38
    for _ in range(25):
        rx.audio_rx(tx.audio_tx())
        tx.audio_rx(rx.audio_tx())
    assert len(tx.pages) == 1 and len(rx.pages) == 1
    tx.switch_to_t38()
    rx.switch_to_t38()
    r = run_back_to_back(tx, rx)
    tx.close()
    rx.close()
    assert r.answering.ok and r.answering.pages == 3
    assert len(rx.receive_parts) == 2
    assert len(tiff_pages(rx.receive_parts[0])) == 1 and len(tiff_pages(rx.receive_parts[1])) == 2


def test_no_callback_reaches_a_closed_session(tmp_path: Path) -> None:
    src = make_fax_tiff(tmp_path / "in.tif", pages=1)
    before = spandsp.live_objects()
    tx, rx = _pair(tmp_path, src, Media.T38)
    assert spandsp.live_objects() == before + 2
    tx.close()
    tx.close()  # twice is fine
    rx.close()
    assert spandsp.live_objects() == before
    # a closed session ignores input instead of touching freed C memory
    rx.t38_rx(b"\x00\x00", 0)
    rx.advance()
    assert rx.take_t38_tx() == []


def test_completion_codes_are_named_after_spandsp() -> None:
    assert spandsp.completion_text(spandsp.T30_ERR_OK) == "OK"
    assert "dropped" in spandsp.completion_text(spandsp.T30_ERR_CALLDROPPED).lower()
    assert spandsp.frame_name(0x80) == "DIS"


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="max_bit_rate"):
        FaxConfig(max_bit_rate=33600)
    with pytest.raises(ValueError, match="ident"):
        FaxConfig(ident="x" * 21)


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4  # resident pages of 4 KiB


@pytest.mark.slow
def test_200_sessions_do_not_grow_memory(tmp_path: Path) -> None:
    src = make_fax_tiff(tmp_path / "in.tif", pages=1, resolution="standard")

    def one_fax(i: int) -> None:
        tx, rx = _pair(tmp_path, src, Media.T38 if i % 2 else Media.AUDIO)
        r = run_back_to_back(tx, rx)
        tx.close()
        rx.close()
        assert r.answering.ok

    for i in range(20):  # warm up allocators and caches
        one_fax(i)
    gc.collect()
    base = _rss_kib()
    for i in range(200):
        one_fax(i)
    gc.collect()
    grown = _rss_kib() - base
    assert spandsp.live_objects() == 0
    assert grown < 4096, f"RSS grew by {grown} KiB over 200 sessions"


def test_spandsp_log_reaches_python_logging(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = make_fax_tiff(tmp_path / "in.tif", pages=1, resolution="standard")
    with caplog.at_level(logging.DEBUG, logger="t38.spandsp.lib"):
        tx, rx = _pair(tmp_path, src, Media.T38)  # log levels are chosen when the engine starts
        run_back_to_back(tx, rx)
        tx.close()
        rx.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "t38.spandsp.lib"]
    # spandsp's own T.30 log, each line tagged with the session that wrote it (the tag buffer must
    # outlive the C object: spandsp keeps the pointer)
    assert any(line.startswith("T.30 tx ") and "DCS" in line for line in lines)
    assert any(line.startswith("T.30 rx ") and "DCS" in line for line in lines)
