"""The native RTP path (t38/native/rtp_native.c) against the Python reference (t38.rtp.PlayoutBuffer).

Both get the same seeded random streams (loss, reordering, duplicates, SSRC changes and back, sequence
and timestamp jumps, other packet sizes, padding/CSRC/extension, wrong payload types, garbage) and
must give the same answer to every push, the same frame on every pop and the same counters. The
end-to-end behaviour (real sockets, real faxes) is covered by the endpoint and call tests, which run
on the native path whenever it is built (and in CI it is)."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from t38 import native_rtp
from t38.rtp import MISSING, PT_PCMA, PT_PCMU, PlayoutBuffer, RtpError, RtpExtension, RtpPacket, RtpSender
from t38.spandsp import ffi


def test_the_native_path_is_built_where_it_is_required() -> None:
    """Where setup could build it (CI sets VFAX_REQUIRE_NATIVE=1), a missing library is a failure, not
    a silent fall back to the slower Python tick."""
    if os.environ.get("VFAX_REQUIRE_NATIVE") != "1":
        pytest.skip("VFAX_REQUIRE_NATIVE is not set")
    assert native_rtp.available(), f"{native_rtp.LIBRARY} missing or older than its source"


needs_native = pytest.mark.skipif(not native_rtp.available(), reason="native RTP path not built")


def _pair(delay_ms: int = 60) -> tuple[PlayoutBuffer, Any, Any]:
    py = PlayoutBuffer(PT_PCMU, delay_ms=delay_ms)
    c, refs = native_rtp.new_stream(RtpSender(PT_PCMU), PT_PCMU, delay_ms)
    return py, c, refs


def _push_both(py: PlayoutBuffer, c: Any, data: bytes, now: float) -> None:
    try:
        want = int(py.push_datagram(data, now))
    except RtpError:
        want = -1
    got = native_rtp.native().vfax_rtp_push_datagram(c, data, len(data), now)
    assert got == want, (data[:12].hex(), want, got)


def _pop_both(py: PlayoutBuffer, c: Any, now: float) -> None:
    frame = py.pop(now)
    kind = native_rtp.native().vfax_rtp_pop(c, now)
    out = bytes(ffi.buffer(c.out, 160))
    if frame is MISSING:
        assert kind in (1, 3)  # missing, or idle before the stream's first packet was due
    elif isinstance(frame, bytes):
        assert kind == 0 and out == frame
    else:
        assert kind == 2
        mask = bytes(ffi.buffer(c.out_mask, 160))
        k = 0
        for count, data in frame.runs:
            if data is None:
                assert mask[k : k + count] == bytes(count)
            else:
                assert mask[k : k + count] == b"\x01" * count and out[k : k + count] == data
            k += count


def _random_stream(rng: random.Random) -> list[tuple[str, Any]]:
    """Events: ("push", datagram) or ("pop", None), a tick's worth of arrivals before each pop."""
    events: list[tuple[str, Any]] = []
    ssrcs = [rng.getrandbits(32), rng.getrandbits(32)]
    cur = 0
    seq = rng.getrandbits(16)
    ts = rng.getrandbits(32)
    held: list[bytes] = []
    for _ in range(rng.randint(50, 400)):
        size = rng.choice((160,) * 12 + (80, 240, 0, 1))
        r = rng.random()
        if r < 0.02:  # SSRC change, sometimes back to the old one
            cur ^= 1
        elif r < 0.03:
            seq = (seq + rng.choice((3001, -150, 40000))) & 0xFFFF
        elif r < 0.04:
            ts = (ts + rng.choice((8000 * 5, -8000 * 5, 1 << 31))) & 0xFFFFFFFF
        pkt = RtpPacket(
            rng.choice((PT_PCMU,) * 30 + (101, PT_PCMA)),
            seq,
            ts,
            ssrcs[cur],
            bytes(rng.getrandbits(8) for _ in range(size)),
            marker=rng.random() < 0.01,
        )
        shape = rng.random()
        if shape < 0.02:
            pkt.padding = rng.randint(1, 8)
        elif shape < 0.04:
            pkt.csrc = (1, 2)
        elif shape < 0.05:
            pkt.extension = RtpExtension(0xBEDE, b"\0\0\0\1")
        data = bytes(pkt)
        if shape > 0.995:  # garbage of several kinds
            data = rng.choice((data[:7], b"\x40" + data[1:], b"\xa0" + data[1:12], b"\x8f" + data[1:20]))
        seq = (seq + 1) & 0xFFFF
        ts = (ts + max(size, 160)) & 0xFFFFFFFF
        fate = rng.random()
        if fate < 0.05:
            continue  # lost
        if fate < 0.10:
            held.append(data)  # arrives later: reordered or late
        else:
            events.append(("push", data))
        if fate > 0.97:
            events.append(("push", data))  # duplicate
        if held and rng.random() < 0.3:
            events.append(("push", held.pop(0)))
        for _ in range(rng.choice((1, 1, 1, 0, 2))):
            events.append(("pop", None))
    return events


@needs_native
@pytest.mark.parametrize("seed", range(60))
def test_native_playout_matches_the_python_reference_on_random_streams(seed: int) -> None:
    rng = random.Random(seed)
    py, c, _refs = _pair(delay_ms=rng.choice((0, 20, 60, 100)))
    now = 100.0 + rng.random()
    for kind, data in _random_stream(rng):
        if kind == "push":
            _push_both(py, c, data, now + rng.random() * 0.01)
        else:
            now += 0.02
            _pop_both(py, c, now)
    assert native_rtp.receiver_stats(c) == py.stats()


@needs_native
def test_a_wrapping_stream_with_every_shape_of_header_matches() -> None:
    py, c, _refs = _pair()
    now = 5.0
    for k in range(300):
        seq, ts = (65500 + k) & 0xFFFF, (0xFFFFF000 + 160 * k) & 0xFFFFFFFF
        pkt = RtpPacket(PT_PCMU, seq, ts, 7, bytes([k % 256]) * 160)
        if k % 7 == 1:
            pkt.padding = 4
        if k % 11 == 2:
            pkt.csrc = (9,)
        if k % 13 == 3:
            pkt.extension = RtpExtension(1, b"abcd")
        _push_both(py, c, bytes(pkt), now)
        now += 0.02
        _pop_both(py, c, now)
    s = native_rtp.receiver_stats(c)
    assert s == py.stats() and s.frames_played > 290 and s.lost == 0


@needs_native
def test_malformed_datagrams_are_refused_with_a_reason_and_change_nothing() -> None:
    py, c, _refs = _pair()
    good = bytes(RtpPacket(PT_PCMU, 1, 160, 5, b"\xff" * 160))
    _push_both(py, c, good, 1.0)
    before = native_rtp.receiver_stats(c)
    for bad, reason in (
        (b"\x80\x00", 1),
        (b"\x40" + good[1:], 2),
        (b"\x8f" + good[1:20], 3),
        (b"\x90" + good[1:12], 4),
        (b"\x90" + good[1:12] + b"\x00\x01\x00\x09", 5),
        (b"\xa0" + good[1:11] + b"\x00", 6),
    ):
        _push_both(py, c, bad, 1.0)
        assert c.malformed_reason == reason and reason in native_rtp.BAD_REASONS
    assert native_rtp.receiver_stats(c) == before == py.stats()


def test_a_library_that_does_not_load_leaves_the_python_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A truncated or foreign-architecture build is a warning and the reference path, not a crash."""
    bad = tmp_path / "libvfaxrtp.so"
    bad.write_bytes(b"\x7fELF truncated")
    monkeypatch.setattr(native_rtp, "LIBRARY", bad)
    monkeypatch.setattr(native_rtp, "_tried", False)
    monkeypatch.setattr(native_rtp, "_lib", None)
    assert native_rtp.native() is None and not native_rtp.available()
