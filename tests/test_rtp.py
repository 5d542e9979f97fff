"""RTP (RFC 3550) for G.711 passthrough, sans-I/O: packet codec, sending stream, playout buffer."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from t38.rtp import (
    MISSING,
    PT_PCMA,
    PT_PCMU,
    PartialFrame,
    PlayoutBuffer,
    PushResult,
    RtpError,
    RtpExtension,
    RtpPacket,
    RtpSender,
)

T = 0.02  # one frame


def _frames(buf: PlayoutBuffer, count: int, start: float = 0.0) -> list[object]:
    return [buf.pop(start + i * T) for i in range(count)]


def _payload(n: int, size: int = 160) -> bytes:
    return bytes([n & 0xFF]) * size


def _pkt(seq: int, ts: int, payload: bytes, ssrc: int = 1, pt: int = PT_PCMU) -> RtpPacket:
    return RtpPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload)


# --- packet codec ---------------------------------------------------------------------------------
def test_plain_g711_packet_round_trips_with_a_12_octet_header() -> None:
    p = RtpPacket(PT_PCMA, 65535, 0xFFFFFF60, 0xDEADBEEF, _payload(7), marker=True)
    data = bytes(p)
    assert len(data) == 12 + 160
    assert data[:2] == b"\x80\x88"  # V=2, marker, PT 8
    assert RtpPacket.parse(data) == p


def test_packet_with_csrc_extension_and_padding_round_trips() -> None:
    p = RtpPacket(
        PT_PCMU,
        1,
        2,
        3,
        b"abc",
        csrc=(10, 11),
        extension=RtpExtension(0xBEDE, b"\x01\x02\x03\x04"),
        padding=5,
    )
    data = bytes(p)
    assert len(data) == 12 + 8 + 4 + 4 + 3 + 5
    q = RtpPacket.parse(data)
    assert q == p
    assert q.payload == b"abc"  # padding and extension are not payload


def test_extension_from_the_peer_is_skipped_to_reach_the_payload() -> None:
    header = bytes([0x90, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3])
    ext = b"\xbe\xde\x00\x02" + bytes(8)
    assert RtpPacket.parse(header + ext + b"PAYLOAD").payload == b"PAYLOAD"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"\x80\x00\x00", "header"),
        (bytes([0x40]) + bytes(11), "version"),
        (bytes([0x82]) + bytes(11) + bytes(4), "CSRC"),
        (bytes([0x90]) + bytes(11) + b"\x00", "extension"),
        (bytes([0x90]) + bytes(11) + b"\x00\x00\x00\x05" + bytes(8), "extension length"),
        (bytes([0xA0]) + bytes(11) + b"ab\x00", "padding"),
        (bytes([0xA0]) + bytes(11) + b"ab\x09", "padding"),
    ],
)
def test_malformed_datagram_raises_rtp_error_naming_the_field(data: bytes, field: str) -> None:
    with pytest.raises(RtpError, match=field):
        RtpPacket.parse(data)


@pytest.mark.parametrize(
    "packet",
    [
        RtpPacket(128, 0, 0, 0),
        RtpPacket(0, 65536, 0, 0),
        RtpPacket(0, 0, 1 << 32, 0),
        RtpPacket(0, 0, 0, -1),
        RtpPacket(0, 0, 0, 0, csrc=tuple(range(16))),
        RtpPacket(0, 0, 0, 0, extension=RtpExtension(1, b"abc")),
        RtpPacket(0, 0, 0, 0, padding=256),
    ],
)
def test_building_an_impossible_packet_is_a_value_error(packet: RtpPacket) -> None:
    with pytest.raises(ValueError) as info:
        bytes(packet)
    assert not isinstance(info.value, RtpError)  # our mistake, not the peer's


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=120))
def test_parse_of_arbitrary_bytes_raises_only_rtp_error(data: bytes) -> None:
    try:
        p = RtpPacket.parse(data)
    except RtpError:
        return
    assert RtpPacket.parse(bytes(p)) == p


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 127),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=40),
    st.booleans(),
    st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    st.none() | st.builds(RtpExtension, st.integers(0, 0xFFFF), st.binary(max_size=12).map(lambda b: b * 4)),
    st.integers(0, 255),
)
def test_every_valid_packet_round_trips(
    pt: int,
    seq: int,
    ts: int,
    ssrc: int,
    payload: bytes,
    marker: bool,
    csrc: tuple[int, ...],
    ext: RtpExtension | None,
    padding: int,
) -> None:
    p = RtpPacket(pt, seq, ts, ssrc, payload, marker, csrc, ext, padding)
    assert RtpPacket.parse(bytes(p)) == p


# --- sending --------------------------------------------------------------------------------------
def test_sender_wraps_sequence_and_timestamp_and_marks_only_the_first_packet() -> None:
    s = RtpSender(PT_PCMU, ssrc=9, sequence_number=65534, timestamp=0xFFFFFF00)
    packets = [s.packet(_payload(i)) for i in range(4)]
    assert [p.sequence_number for p in packets] == [65534, 65535, 0, 1]
    assert [p.timestamp for p in packets] == [0xFFFFFF00, 0xFFFFFFA0, 0x40, 0xE0]
    assert [p.marker for p in packets] == [True, False, False, False]
    assert s.stats.packets_sent == 4 and s.stats.octets_sent == 640


def test_sender_starts_from_random_values() -> None:
    a, b = RtpSender(), RtpSender()
    assert (a.ssrc, a.sequence_number, a.timestamp) != (b.ssrc, b.sequence_number, b.timestamp)
    seeded = [RtpSender(rng=random.Random(5)) for _ in range(2)]
    assert seeded[0].ssrc == seeded[1].ssrc


def test_in_place_header_is_the_same_packet_as_the_object_path() -> None:
    a = RtpSender(PT_PCMA, ssrc=1, sequence_number=2, timestamp=3)
    b = RtpSender(PT_PCMA, ssrc=1, sequence_number=2, timestamp=3)
    for i in range(3):
        buf = bytearray(12) + _payload(i)
        a.write_header(buf)
        assert bytes(buf) == bytes(b.packet(_payload(i)))


# --- playout --------------------------------------------------------------------------------------
def _stream(buf: PlayoutBuffer, order: list[int], seq0: int = 100, ts0: int = 5000, ssrc: int = 1) -> None:
    for k in order:
        buf.push(_pkt(seq0 + k, ts0 + 160 * k, _payload(k), ssrc), 0.0)


def test_audio_is_played_after_the_fixed_delay_in_order() -> None:
    buf = PlayoutBuffer(delay_ms=60)
    _stream(buf, [0])
    out = _frames(buf, 3)
    assert out == [MISSING, MISSING, MISSING]
    _stream(buf, [1, 2])
    assert _frames(buf, 4) == [_payload(0), _payload(1), _payload(2), MISSING]
    st_ = buf.stats()
    assert st_.frames_idle == 3 and st_.frames_played == 3 and st_.frames_missing == 1


def test_reordered_packets_are_played_in_timestamp_order() -> None:
    buf = PlayoutBuffer(delay_ms=60)
    _stream(buf, [0, 2, 1, 4, 3])
    assert _frames(buf, 8)[3:] == [_payload(k) for k in range(5)]
    assert buf.stats().reordered == 2 and buf.stats().lost == 0


def test_duplicates_are_dropped_and_counted() -> None:
    buf = PlayoutBuffer(delay_ms=20)
    _stream(buf, [0, 0, 1])
    assert buf.push(_pkt(101, 5160, b"X" * 160, 1), 0.0) is PushResult.DUPLICATE
    assert _frames(buf, 3) == [MISSING, _payload(0), _payload(1)]
    assert buf.stats().duplicates == 2


def test_lost_packet_is_reported_missing_not_as_zeros() -> None:
    buf = PlayoutBuffer(delay_ms=40)
    _stream(buf, [0, 1, 3])
    out = _frames(buf, 6)
    assert out[2:6] == [_payload(0), _payload(1), MISSING, _payload(3)]
    s = buf.stats()
    assert s.lost == 1 and s.frames_missing == 1 and s.samples_missing == 160


def test_late_packet_is_dropped_counted_and_measured() -> None:
    buf = PlayoutBuffer(delay_ms=20)
    _stream(buf, [0])
    assert _frames(buf, 3) == [MISSING, _payload(0), MISSING]
    # packet 1 was due at the third pop (t = 0.04) and arrives at t = 0.07
    assert buf.push(_pkt(101, 5160, _payload(1), 1), 0.07) is PushResult.LATE
    s = buf.stats()
    assert s.late == 1 and s.frames_missing == 1
    assert s.max_late_ms == pytest.approx(30.0)


def test_sequence_and_timestamp_wrap_keep_the_audio_continuous() -> None:
    buf = PlayoutBuffer(delay_ms=20)
    _stream(buf, list(range(6)), seq0=65533, ts0=0xFFFFFFFF - 300)
    assert _frames(buf, 7)[1:] == [_payload(k) for k in range(6)]
    s = buf.stats()
    assert s.lost == 0 and s.resyncs == 0 and s.frames_missing == 0


def test_new_ssrc_starts_a_clean_stream_after_the_old_tail() -> None:
    buf = PlayoutBuffer(delay_ms=40)
    _stream(buf, [0, 1], ssrc=1)
    assert _frames(buf, 2) == [MISSING, MISSING]
    # a re-INVITE: the peer restarts with another SSRC, sequence and timestamp
    buf.push(_pkt(7, 999, _payload(50), ssrc=2), 0.04)
    buf.push(_pkt(8, 1159, _payload(51), ssrc=2), 0.06)
    assert buf.push(_pkt(102, 5320, _payload(2), ssrc=1), 0.06) is PushResult.STALE_SSRC
    assert _frames(buf, 4) == [_payload(0), _payload(1), _payload(50), _payload(51)]
    s = buf.stats()
    assert s.ssrc_changes == 1 and s.stale_ssrc == 1 and s.ssrc == 2 and s.lost == 0


def test_peer_that_goes_back_to_its_old_ssrc_is_followed() -> None:
    buf = PlayoutBuffer(delay_ms=20)
    _stream(buf, [0], ssrc=1)
    _stream(buf, [0], ssrc=2)
    _stream(buf, list(range(1, 13)), ssrc=1)
    assert buf.stats().ssrc == 1 and buf.stats().ssrc_changes == 2


@pytest.mark.parametrize("pt", [101, PT_PCMA, 13])
def test_other_payload_types_are_ignored(pt: int) -> None:
    """RFC 4733 telephone-event (101), the other G.711 law, comfort noise (13): none of them is fax audio."""
    buf = PlayoutBuffer(PT_PCMU, delay_ms=20)
    _stream(buf, [0])
    assert buf.push(_pkt(101, 5160, b"\x00\x0a\x00\xa0", pt=pt), 0.0) is PushResult.IGNORED_PT
    _stream(buf, [1])
    assert _frames(buf, 3) == [MISSING, _payload(0), _payload(1)]
    assert buf.stats().ignored_pt == 1 and buf.stats().lost == 0


def test_10_ms_packets_are_reframed_into_20_ms_frames() -> None:
    buf = PlayoutBuffer(delay_ms=20)
    for k in range(6):
        buf.push(_pkt(k, 80 * k, _payload(k, 80)), 0.0)
    out = _frames(buf, 4)[1:]
    assert out == [
        _payload(0, 80) + _payload(1, 80),
        _payload(2, 80) + _payload(3, 80),
        _payload(4, 80) + _payload(5, 80),
    ]


def test_lost_30_ms_packet_leaves_partial_frames_with_exact_missing_samples() -> None:
    buf = PlayoutBuffer(delay_ms=20)
    for k in (0, 2, 3):  # packet 1 (samples 240..479) is lost
        buf.push(_pkt(k, 240 * k, _payload(k, 240)), 0.0)
    out = _frames(buf, 7)[1:]
    assert out[0] == _payload(0, 160)
    assert out[1] == PartialFrame(((80, _payload(0, 80)), (80, None)))
    assert out[2] is MISSING
    assert out[3] == _payload(2, 160)
    assert out[4] == _payload(2, 80) + _payload(3, 80)  # a frame across two packets
    assert out[5] == _payload(3, 160)
    s = buf.stats()
    assert s.samples_missing == 240 and s.lost == 1 and s.frames_partial == 1 and s.frames_missing == 1


def test_jitter_estimate_follows_rfc_3550() -> None:
    """Transit alternating by 10 ms (80 samples): J += (|D| - J) / 16 from the second packet on."""
    buf = PlayoutBuffer(delay_ms=100)
    expected = 0.0
    for k in range(40):
        arrival = k * T + (0.010 if k % 2 else 0.0)
        buf.push(_pkt(k, 160 * k, _payload(k)), arrival)
        if k:
            expected += (80 - expected) / 16
    s = buf.stats()
    assert s.jitter == pytest.approx(expected, rel=1e-6)
    assert s.jitter_ms == pytest.approx(expected / 8)
    assert 60 < s.jitter < 80  # converging on the 80-sample swing


def test_timestamp_jump_resyncs_instead_of_waiting_seconds() -> None:
    buf = PlayoutBuffer(delay_ms=20, window_ms=200)
    _stream(buf, [0, 1])
    _frames(buf, 3)
    buf.push(_pkt(102, 5000 + 160 * 2 + 8000 * 30, _payload(9)), 0.06)  # 30 s ahead
    assert _frames(buf, 2) == [MISSING, _payload(9)]
    assert buf.stats().resyncs == 1


def test_persistent_lateness_resyncs_the_stream() -> None:
    """A peer whose clock runs slow ends up late for good; the buffer re-anchors instead of dropping all."""
    buf = PlayoutBuffer(delay_ms=20, late_resync=3)
    _stream(buf, [0])
    _frames(buf, 6)
    for k in (1, 2, 3, 4):
        buf.push(_pkt(100 + k, 5000 + 160 * k, _payload(k)), 0.1)
    assert _frames(buf, 2) == [MISSING, _payload(3)]
    s = buf.stats()
    assert s.late == 2 and s.resyncs == 1


def test_depth_report_shows_how_far_ahead_audio_was_buffered() -> None:
    buf = PlayoutBuffer(delay_ms=60)
    _stream(buf, [0, 1, 2, 3])
    assert buf.stats().max_depth_ms == pytest.approx(60 + 80)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.just(("pop",)),
            st.tuples(
                st.just("push"),
                st.integers(0, 0xFFFF),
                st.integers(0, 0xFFFFFFFF),
                st.sampled_from([1, 2]),
                st.sampled_from([0, 1, 80, 160, 240, 400]),
                st.sampled_from([PT_PCMU, 101]),
            ),
        ),
        max_size=50,
    )
)
def test_any_packet_sequence_keeps_one_frame_per_pop(ops: list[tuple]) -> None:
    buf = PlayoutBuffer(delay_ms=40, window_ms=100)
    pops = 0
    t = 0.0
    for op in ops:
        t += 0.005
        if op[0] == "pop":
            frame = buf.pop(t)
            pops += 1
            if isinstance(frame, bytes):
                assert len(frame) == 160
            elif isinstance(frame, PartialFrame):
                assert sum(n for n, _ in frame.runs) == 160
        else:
            _, seq, ts, ssrc, size, pt = op
            buf.push(_pkt(seq, ts, b"\x55" * size, ssrc, pt), t)
    s = buf.stats()
    assert s.frames_played + s.frames_partial + s.frames_missing + s.frames_idle == pops
    assert s.lost >= 0
