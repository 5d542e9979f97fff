"""UDPTL codec, sender and receiver (ITU-T T.38 §9, Annex A and C), all without sockets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from t38.udptl import (
    DEFAULT_CONTROL_REDUNDANCY,
    DEFAULT_IMAGE_REDUNDANCY,
    RESYNC_DISTANCE,
    Delivered,
    FecInfo,
    Gap,
    IfpKind,
    Udptl,
    UdptlConfig,
    UdptlError,
    UdptlPacket,
    UdptlReceiver,
    UdptlSender,
    UdptlSizeError,
    classify_ifp,
    fec_coverage,
    ifp_length,
)

# --- IFP packets shaped as spandsp sends them (T.38 §7.2-7.4, aligned PER, T38FaxVersion 0) ---------------
CED = bytes([0x04])  # t30-indicator, value 2 (ced) in bits 4..1
V21_PREAMBLE = bytes([0x06])  # t30-indicator, value 3 (v21-preamble)
NO_SIGNAL = bytes([0x00])  # t30-indicator, value 0 (no-signal)


def hdlc_v21(payload: bytes) -> bytes:
    """t30-data v21 with one hdlc-data field: control, T.30 frame octets."""
    # 0xC0: data-field present, Type-of-msg = t30-data, ENUMERATED root value 0 (v21)
    # 0x01: one field; 0x80: field-data present, field-type hdlc-data (0)
    # then field-data length-1 in 16 bits and the octets
    return bytes([0xC0, 0x01, 0x80]) + (len(payload) - 1).to_bytes(2, "big") + payload


def image_v17(payload: bytes) -> bytes:
    """t30-data v17-14400 (root value 8) with one t4-non-ecm-data field: image."""
    return bytes([0xC0 | (8 << 1), 0x01, 0x80 | (6 << 4)]) + (len(payload) - 1).to_bytes(2, "big") + payload


def images(n: int, size: int = 40, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [image_v17(bytes(rng.randrange(256) for _ in range(size))) for _ in range(n)]


def deliveries(events: list[Delivered | Gap]) -> list[tuple[int, bytes]]:
    return [(e.seq, e.ifp) for e in events if isinstance(e, Delivered)]


# --- hand-built vectors from the encoding rules ----------------------------------------------------------


def test_vector_without_error_recovery() -> None:
    data = bytes(
        [
            0x01, 0x02,  # seq-number 258, 16 bits big-endian
            0x01, 0x04,  # primary-ifp-packet: length 1, IFP = indicator ced
            0x00,  # error-recovery CHOICE 0 (secondary-ifp-packets) + 7 padding bits
            0x00,  # count of secondary packets: 0
        ]
    )  # fmt: skip
    packet = UdptlPacket.parse(data)
    assert packet == UdptlPacket(seq=258, primary=CED)
    assert bytes(packet) == data


def test_vector_with_two_secondary_packets_newest_first() -> None:
    data = bytes(
        [
            0x00, 0x05,  # seq-number 5
            0x07, 0xC0, 0x01, 0x80, 0x00, 0x01, 0xFF, 0x13,  # primary: length 7, V.21 HDLC data FF 13
            0x00,  # error-recovery: secondary-ifp-packets
            0x02,  # two secondaries
            0x01, 0x06,  # seq 4: length 1, indicator v21-preamble
            0x01, 0x00,  # seq 3: length 1, indicator no-signal
        ]
    )  # fmt: skip
    packet = UdptlPacket.parse(data)
    assert packet.seq == 5
    assert packet.primary == hdlc_v21(b"\xff\x13")
    assert packet.secondary == (V21_PREAMBLE, NO_SIGNAL)
    assert bytes(packet) == data


def test_vector_with_fec_info() -> None:
    data = bytes(
        [
            0x00, 0x09,  # seq-number 9
            0x01, 0x06,  # primary: indicator v21-preamble
            0x80,  # error-recovery CHOICE 1 (fec-info)
            0x01, 0x03,  # fec-npackets: unconstrained INTEGER, 1 octet, value 3
            0x02,  # fec-data: 2 parity strings
            0x02, 0xAA, 0xBB,  # parity 0: length 2
            0x01, 0xCC,  # parity 1: length 1
        ]
    )  # fmt: skip
    packet = UdptlPacket.parse(data)
    assert packet.fec == FecInfo(npackets=3, parity=(b"\xaa\xbb", b"\xcc"))
    assert bytes(packet) == data


def test_vector_with_two_octet_length_determinant() -> None:
    ifp = image_v17(bytes(195))  # 200 octets: 10xxxxxx xxxxxxxx = 0x80 0xC8
    data = b"\x00\x01" + b"\x80\xc8" + ifp + b"\x00\x00"
    assert UdptlPacket.parse(data).primary == ifp
    assert bytes(UdptlPacket(1, ifp)) == data


def test_vector_with_fragmented_open_type() -> None:
    ifp = bytes(range(256)) * 64 + b"\x01\x02\x03\x04\x05"  # 16384 + 5 octets
    # 11000001 = one fragment of 16K octets, then an ordinary determinant for the remaining 5
    data = b"\x00\x00" + b"\xc1" + ifp[:16384] + b"\x05" + ifp[16384:] + b"\x00\x00"
    assert UdptlPacket.parse(data).primary == ifp
    assert bytes(UdptlPacket(0, ifp)) == data


def test_vector_fec_npackets_is_a_twos_complement_integer() -> None:
    # fec-npackets is an unconstrained INTEGER: a length octet, then two's complement octets,
    # so 20 takes one octet and 128 needs a leading zero octet to stay positive
    assert bytes(UdptlPacket(0, CED, fec=FecInfo(20, ()))) == b"\x00\x00\x01\x04\x80\x01\x14\x00"
    data = b"\x00\x00\x01\x04\x80\x02\x00\x20\x00"  # 0x0020 = 32, in two octets, also valid
    assert UdptlPacket.parse(data).fec == FecInfo(32, ())


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"", "seq-number"),
        (b"\x00", "seq-number"),
        (b"\x00\x01", "primary-ifp-packet length"),
        (b"\x00\x01\x05\x04\x04", "primary-ifp-packet: length 5"),
        (b"\x00\x01\x00\x00\x00", "primary-ifp-packet is empty"),
        (b"\x00\x01\x01\x04", "error-recovery"),
        (b"\x00\x01\x01\x04\x00", "secondary-ifp-packets length"),
        (b"\x00\x01\x01\x04\x00\x40\x01\x00", "absurd secondary-ifp-packets count"),
        (b"\x00\x01\x01\x04\x00\x01\x03\x00", "secondary-ifp-packet 0: length 3"),
        (b"\x00\x01\x01\x04\x00\x00\x00", "1 octets after error-recovery"),
        (b"\x00\x01\x01\x04\x80\x00", "fec-npackets length 0"),
        (b"\x00\x01\x01\x04\x80\x01\xff\x00", "absurd fec-npackets -1"),
        (b"\x00\x01\x01\x04\x80\x01\x03\x7f", "absurd fec-data count"),
        (b"\x00\x01\xc0\x04\x00\x00", "bad fragment multiplier 0"),
        (b"\x00\x01\xc1\x04\x00\x00", "primary-ifp-packet: length 16384"),
    ],
)
def test_malformed_datagram_raises_udptl_error_naming_the_field(data: bytes, field: str) -> None:
    with pytest.raises(UdptlError, match=field):
        UdptlPacket.parse(data)


# --- round trips -----------------------------------------------------------------------------------------

_ifp = st.binary(min_size=1, max_size=300)


@st.composite
def packets(draw: st.DrawFn) -> UdptlPacket:
    seq = draw(st.integers(0, 65535))
    primary = draw(_ifp)  # long and fragmented primaries: test_primary_of_every_length_class_round_trips
    shape = draw(st.sampled_from(["none", "redundancy", "fec"]))
    if shape == "redundancy":
        return UdptlPacket(seq, primary, tuple(draw(st.lists(_ifp, min_size=1, max_size=8))))
    if shape == "fec":
        parity = tuple(draw(st.lists(st.binary(max_size=300), max_size=5)))
        return UdptlPacket(seq, primary, fec=FecInfo(draw(st.integers(0, 32)), parity))
    return UdptlPacket(seq, primary)


@settings(max_examples=400, deadline=None)
@given(packets())
def test_every_packet_shape_round_trips(packet: UdptlPacket) -> None:
    assert UdptlPacket.parse(bytes(packet)) == packet


@pytest.mark.parametrize("size", [1, 127, 128, 16383, 16384, 16385, 32768, 40000])
def test_primary_of_every_length_class_round_trips(size: int) -> None:
    packet = UdptlPacket(7, bytes([0xD0]) * size, (CED,))
    assert UdptlPacket.parse(bytes(packet)) == packet


@pytest.mark.parametrize("mode", ["none", "redundancy", "fec"])
@pytest.mark.parametrize("size", [16384, 16383 + 200, 40000, 65536 + 100])
def test_fragmented_primaries_still_fit_a_huge_max_datagram_exactly(mode: str, size: int) -> None:
    sender = UdptlSender(UdptlConfig(ec_mode=mode, peer_max_datagram=size + 12))
    ifp = bytes([0xD0]) * size
    data = sender.send(ifp)
    assert len(data) <= size + 12
    assert UdptlPacket.parse(data).primary == ifp
    biggest = sender.max_ifp_size()
    assert len(sender.send(bytes(biggest))) <= size + 12


def test_packet_refuses_both_redundancy_and_fec() -> None:
    with pytest.raises(ValueError, match="CHOICE"):
        UdptlPacket(0, CED, (CED,), FecInfo(3, ()))


# --- IFP classification ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ifp", "kind"),
    [
        (CED, IfpKind.CONTROL),
        (bytes([15 << 1]), IfpKind.CONTROL),  # indicator v17-14400-long-training
        (bytes([0x20, 0x40]), IfpKind.CONTROL),  # extension indicator v8-signal
        (hdlc_v21(b"\xff\x13\x80"), IfpKind.CONTROL),  # DIS/DCS/CFR... travel as V.21 HDLC
        (bytes([0xE0, 0x00, 0x01, 0x90]), IfpKind.CONTROL),  # extension data v8, cm-message
        (image_v17(b"\x00\x01"), IfpKind.IMAGE),
        (bytes([0xC0 | (4 << 1), 0x01, 0x80, 0x00, 0x00, 0x55]), IfpKind.IMAGE),  # v29-9600 ECM HDLC
        (bytes([0xC0 | (1 << 1), 0x01, 0x60]), IfpKind.IMAGE),  # v27-2400, t4-non-ecm-data, no data
        (bytes([0xE0, 0xC0, 0x00]), IfpKind.IMAGE),  # extension data value 3: v34-pri-ch
        (bytes([0xE1, 0x40, 0x00]), IfpKind.IMAGE),  # extension data value 5: v33-14400
        (b"", IfpKind.CONTROL),
    ],
)
def test_ifp_is_classified_control_or_image(ifp: bytes, kind: IfpKind) -> None:
    assert classify_ifp(ifp) is kind


@pytest.mark.parametrize(
    ("ifp", "version"),
    [
        (bytes([0xC0 | (8 << 1), 0x01, 0x40]), 0),  # v17-14400, hdlc-fcs-OK-sig-end (4), as spandsp ends ECM
        (bytes([0xC0 | (8 << 1), 0x01, 0x70]), 0),  # v17-14400, t4-non-ecm-sig-end (7): end of a page
        (bytes([0xC0 | (4 << 1), 0x02, 0x21]), 0),  # v29-9600: hdlc-fcs-OK, hdlc-sig-end in one octet
        (bytes([0xC0 | (8 << 1), 0x01, 0x08]), 1),  # version 1 layout: hdlc-sig-end in bits 5..3
    ],
)
def test_packet_ending_a_high_speed_signal_is_control(ifp: bytes, version: int) -> None:
    # losing it leaves the far end waiting for a carrier that never stops, so it gets the deeper depth
    assert classify_ifp(ifp, version) is IfpKind.CONTROL
    assert ifp_length(ifp, version) == len(ifp)


def test_ifp_length_reads_spandsp_version_0_and_later_field_headers() -> None:
    assert ifp_length(image_v17(b"abc") + b"\x00\x00") == len(image_v17(b"abc"))
    # version 0: two fields without data share one octet (4 bits each), then the octet ends
    v0 = bytes([0xC0 | (8 << 1), 0x02, (1 << 4) | 0x00])  # hdlc-sig-end, then hdlc-data, no field-data
    assert ifp_length(v0 + b"\x00\x00", t38_version=0) == 3
    # version 1 and later: 5-bit headers, one octet per field
    v1 = bytes([0xC0 | (8 << 1), 0x02, 0x08, 0x00])
    assert ifp_length(v1, t38_version=1) == 4
    assert ifp_length(bytes([0xC0, 0x01, 0x80, 0x00, 0x09])) is None  # field-data truncated


# --- sender ----------------------------------------------------------------------------------------------


def test_defaults_protect_control_deeper_than_image() -> None:
    config = UdptlConfig()
    assert config.ec_mode == "redundancy"
    assert config.control_redundancy == DEFAULT_CONTROL_REDUNDANCY > DEFAULT_IMAGE_REDUNDANCY >= 3
    assert config.image_redundancy == DEFAULT_IMAGE_REDUNDANCY


def test_redundancy_winds_up_and_carries_previous_packets_newest_first() -> None:
    sender = UdptlSender(UdptlConfig(image_redundancy=2, control_redundancy=2))
    sent = images(5)
    decoded = [UdptlPacket.parse(sender.send(ifp)) for ifp in sent]
    assert [p.seq for p in decoded] == [0, 1, 2, 3, 4]
    assert decoded[0].secondary == ()
    assert decoded[1].secondary == (sent[0],)
    assert decoded[4].secondary == (sent[3], sent[2])


def test_control_packet_is_repeated_for_the_deeper_control_depth() -> None:
    sender = UdptlSender(UdptlConfig(image_redundancy=1, control_redundancy=4, peer_max_datagram=1400))
    dcs = hdlc_v21(b"\xff\x13\x83")
    sender.send(dcs)
    counts = [len(UdptlPacket.parse(sender.send(ifp)).secondary) for ifp in images(6)]
    # the DCS rides in the next 4 datagrams (with the image packets between), then only depth 1 remains
    assert counts == [1, 2, 3, 4, 1, 1]
    assert UdptlPacket.parse(sender.send(images(1)[0])).secondary[-1] != dcs


def test_no_error_recovery_sends_an_empty_secondary_list() -> None:
    sender = UdptlSender(UdptlConfig(ec_mode="none"))
    sender.send(CED)
    assert sender.send(V21_PREAMBLE) == b"\x00\x01\x01\x06\x00\x00"


@pytest.mark.parametrize("mode", ["none", "redundancy", "fec"])
@pytest.mark.parametrize("limit", [60, 120, 400])
def test_max_datagram_respected_and_primary_never_dropped(mode: str, limit: int) -> None:
    config = UdptlConfig(ec_mode=mode, peer_max_datagram=limit, control_redundancy=8, image_redundancy=4)
    sender = UdptlSender(config)
    rng = random.Random(limit)
    history: list[bytes] = []
    for _ in range(300):
        size = rng.randrange(1, sender.max_ifp_size() + 1)
        ifp = bytes([0xD0]) + bytes(rng.randrange(256) for _ in range(size - 1))
        data = sender.send(ifp)
        assert len(data) <= limit
        packet = UdptlPacket.parse(data)
        assert packet.primary == ifp
        assert list(packet.secondary) == history[::-1][: len(packet.secondary)]
        history.append(ifp)
    assert sender.stats.largest_datagram <= limit


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["none", "redundancy", "fec"]),
    st.integers(20, 600),
    st.lists(st.integers(1, 700), min_size=1, max_size=30),
)
def test_no_datagram_exceeds_the_peer_max_datagram(mode: str, limit: int, sizes: list[int]) -> None:
    sender = UdptlSender(UdptlConfig(ec_mode=mode, peer_max_datagram=limit))
    for size in sizes:
        ifp = bytes([0x06]) * size
        try:
            data = sender.send(ifp)
        except UdptlSizeError:
            assert size > sender.max_ifp_size()
            continue
        assert len(data) <= limit
        assert UdptlPacket.parse(data).primary == ifp


@pytest.mark.parametrize("mode", ["none", "redundancy", "fec"])
def test_largest_ifp_that_fits_is_sent_and_one_more_octet_is_refused(mode: str) -> None:
    sender = UdptlSender(UdptlConfig(ec_mode=mode, peer_max_datagram=200))
    biggest = sender.max_ifp_size()
    assert len(sender.send(bytes(biggest))) == 200
    with pytest.raises(UdptlSizeError, match="T38FaxMaxDatagram 200"):
        sender.send(bytes(biggest + 1))


def test_sender_sequence_wraps_from_65535_to_0() -> None:
    sender = UdptlSender(seq=65534)
    seqs = [UdptlPacket.parse(sender.send(ifp)).seq for ifp in images(4)]
    assert seqs == [65534, 65535, 0, 1]


def test_fec_coverage_interleaves_entries_over_span_times_entries_packets() -> None:
    assert [fec_coverage(20, 3, 3, i) for i in range(3)] == [[11, 14, 17], [12, 15, 18], [13, 16, 19]]
    assert fec_coverage(1, 2, 2, 0) == [65533, 65535]  # wraps below 0


def test_fec_parity_is_the_xor_of_the_covered_packets() -> None:
    sender = UdptlSender(UdptlConfig(ec_mode="fec", fec_span=2, fec_entries=2, peer_max_datagram=1400))
    sent = [bytes([i, i * 3, 0x55][: 1 + i % 3]) for i in range(1, 9)]
    for ifp in sent[:-1]:
        sender.send(ifp)
    packet = UdptlPacket.parse(sender.send(sent[-1]))
    assert packet.fec is not None and packet.fec.npackets == 2
    for index, parity in enumerate(packet.fec.parity):
        covered = [sent[s] for s in fec_coverage(packet.seq, 2, 2, index)]
        width = max(map(len, covered))
        expected = bytes(a ^ b for a, b in zip(*(c.ljust(width, b"\x00") for c in covered), strict=True))
        assert parity == expected


def test_fec_winds_up_at_the_start_of_a_stream() -> None:
    sender = UdptlSender(UdptlConfig(ec_mode="fec", fec_span=3, fec_entries=3))
    fecs = [UdptlPacket.parse(sender.send(ifp)).fec for ifp in images(10)]
    assert [(f.npackets, len(f.parity)) for f in fecs if f] == [
        (0, 0), (0, 0), (0, 0), (3, 1), (3, 1), (3, 1), (3, 2), (3, 2), (3, 2), (3, 3)
    ]  # fmt: skip


def test_idle_control_datagram_is_repeated_on_schedule_then_stops() -> None:
    sender = UdptlSender(UdptlConfig(idle_resends=(0.02, 0.06, 0.12)))
    data = sender.send(hdlc_v21(b"\xff\x13\x84"), now=10.0)
    assert sender.resends_due(10.01) == []
    assert sender.resends_due(10.02) == [data]
    assert sender.resends_due(10.04) == []
    assert sender.resends_due(10.5) == [data]  # a late call: one copy for both remaining delays
    assert sender.resends_due(11.0) == []
    assert (sender.stats.sent, sender.stats.resent) == (1, 2)


def test_image_datagrams_and_untimed_sends_are_not_repeated() -> None:
    sender = UdptlSender()
    sender.send(images(1)[0], now=0.0)
    assert sender.resends_due(1.0) == []
    sender.send(CED)
    assert sender.resends_due(1.0) == []


def test_a_new_datagram_restarts_the_resend_schedule() -> None:
    sender = UdptlSender(UdptlConfig(idle_resends=(0.02,)))
    sender.send(CED, now=0.0)
    sender.send(V21_PREAMBLE, now=0.01)
    assert sender.resends_due(0.02) == []
    assert UdptlPacket.parse(sender.resends_due(0.03)[0]).primary == V21_PREAMBLE


def test_tail_of_a_message_survives_a_burst_through_idle_resends() -> None:
    # DCS travels as V.21 HDLC chunks, its sig-end and a no-signal indicator; then the sender is silent
    tail = [hdlc_v21(b"\xff\x13"), hdlc_v21(b"\x83\x00"), bytes([0xC0, 0x01, 0x40]), NO_SIGNAL]
    sender, receiver = UdptlSender(), UdptlReceiver()
    for i, ifp in enumerate(tail):
        sender.send(ifp, now=i * 0.02)  # all four lost in a burst
    copies = [c for t in (0.08, 0.1, 0.14, 0.2, 0.32) for c in sender.resends_due(t)]
    assert len(copies) == 4
    events = receiver.receive(copies[2], now=0.2)  # the burst also took the first two copies
    assert deliveries(events) == list(enumerate(tail))
    assert receiver.receive(copies[3], now=0.32) == []
    assert receiver.stats.duplicates == 1


# --- receiver --------------------------------------------------------------------------------------------


def _link(config: UdptlConfig, sent: list[bytes], lose: set[int], seq: int = 0) -> tuple[list, UdptlReceiver]:
    sender = UdptlSender(config, seq=seq)
    receiver = UdptlReceiver(config)
    events: list[Delivered | Gap] = []
    for i, ifp in enumerate(sent):
        data = sender.send(ifp)
        if i not in lose:
            events += receiver.receive(data, now=i * 0.02)
    return events, receiver


def test_in_order_packets_are_delivered_at_once_with_their_seq() -> None:
    sent = images(5)
    events, receiver = _link(UdptlConfig(), sent, set())
    assert deliveries(events) == list(enumerate(sent))
    assert receiver.stats.received == 5
    assert receiver.stats.unrecoverable == receiver.stats.recovered_redundancy == 0


def test_redundant_packet_fills_gap() -> None:
    sent = images(10)
    events, receiver = _link(UdptlConfig(image_redundancy=3), sent, {3, 4, 5})
    assert deliveries(events) == list(enumerate(sent))
    assert receiver.stats.recovered_redundancy == 3
    assert receiver.stats.unrecoverable == 0


def test_loss_deeper_than_redundancy_is_a_gap_and_later_packets_flow() -> None:
    sent = images(30)
    config = UdptlConfig(image_redundancy=1, reorder_window=4, reorder_timeout=10.0)
    events, receiver = _link(config, sent, {5, 6, 7})
    # 7 came back inside 8's redundancy; 5 and 6 are gone, declared once 4 later packets waited
    assert [e for e in events if isinstance(e, Gap)] == [Gap(seq=5, count=2)]
    assert deliveries(events) == [(i, sent[i]) for i in range(30) if i not in (5, 6)]
    assert receiver.stats.unrecoverable == 2
    assert receiver.stats.recovered_redundancy == 1


def test_gap_is_given_up_after_the_reorder_timeout_when_traffic_stops() -> None:
    sent = images(4)
    receiver = UdptlReceiver(UdptlConfig(ec_mode="none", reorder_timeout=0.3))
    sender = UdptlSender(UdptlConfig(ec_mode="none"))
    datagrams = [sender.send(ifp) for ifp in sent]
    assert deliveries(receiver.receive(datagrams[0], now=0.0)) == [(0, sent[0])]
    assert receiver.receive(datagrams[2], now=0.05) == []
    assert receiver.next_deadline() == pytest.approx(0.35)
    assert receiver.poll(now=0.2) == []
    assert receiver.poll(now=0.36) == [Gap(1, 1), Delivered(2, sent[2])]
    assert receiver.next_deadline() is None


def test_late_packet_after_its_gap_was_given_up_is_dropped() -> None:
    config = UdptlConfig(ec_mode="none", reorder_timeout=0.1)
    sender, receiver = UdptlSender(config), UdptlReceiver(config)
    datagrams = [sender.send(ifp) for ifp in images(3)]
    receiver.receive(datagrams[0], 0.0)
    receiver.receive(datagrams[2], 0.0)
    receiver.poll(1.0)
    assert receiver.receive(datagrams[1], 1.1) == []
    assert receiver.stats.late == 1
    assert receiver.stats.unrecoverable == 1


def test_duplicates_are_dropped_and_counted() -> None:
    sender, receiver = UdptlSender(), UdptlReceiver()
    datagrams = [sender.send(ifp) for ifp in images(3)]
    out = []
    for d in [datagrams[0], datagrams[0], datagrams[1], datagrams[2], datagrams[1]]:
        out += deliveries(receiver.receive(d, 0.0))
    assert [seq for seq, _ in out] == [0, 1, 2]
    assert receiver.stats.duplicates == 2


def test_reordered_packets_are_delivered_in_order() -> None:
    config = UdptlConfig(ec_mode="none")
    sender, receiver = UdptlSender(config), UdptlReceiver(config)
    sent = images(6)
    datagrams = [sender.send(ifp) for ifp in sent]
    out = []
    for i in [0, 2, 1, 4, 5, 3]:
        out += deliveries(receiver.receive(datagrams[i], 0.0))
    assert out == list(enumerate(sent))
    assert receiver.stats.reordered == 2
    assert receiver.stats.unrecoverable == 0


def test_reordered_packet_recovered_early_from_redundancy_is_not_counted_as_loss() -> None:
    sender, receiver = UdptlSender(), UdptlReceiver()
    datagrams = [sender.send(ifp) for ifp in images(3)]
    for i in [0, 2, 1]:
        receiver.receive(datagrams[i], 0.0)
    assert receiver.stats.recovered_redundancy == 0
    assert receiver.stats.late == 1
    assert receiver.stats.duplicates == 0


@pytest.mark.parametrize("lost", [{7}, {6, 7}, {6, 7, 8}, {3, 9, 15}])
def test_parity_fec_rebuilds_lost_packets_exactly(lost: set[int]) -> None:
    config = UdptlConfig(ec_mode="fec", fec_span=3, fec_entries=3, peer_max_datagram=1400)
    rng = random.Random(1)
    # packets of different lengths: the rebuilt one must lose the zero padding of the parity
    sent = [image_v17(bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 60)))) for _ in range(30)]
    events, receiver = _link(config, sent, lost)
    assert deliveries(events) == list(enumerate(sent))
    assert receiver.stats.recovered_fec == len(lost)
    assert receiver.stats.unrecoverable == 0


def test_fec_cut_to_fit_max_datagram_still_repairs() -> None:
    config = UdptlConfig(ec_mode="fec", fec_span=2, fec_entries=3, peer_max_datagram=200)
    sender, receiver = UdptlSender(config), UdptlReceiver(config)
    events: list[Delivered | Gap] = []
    sent = images(40, size=50)
    entries = set()
    for i, ifp in enumerate(sent):
        data = sender.send(ifp)
        assert len(data) <= 200
        fec = UdptlPacket.parse(data).fec
        assert fec is not None
        entries.add(len(fec.parity))
        if i not in (10, 20, 30):
            events += receiver.receive(data, 0.0)
    assert max(entries) < 3  # three parity entries of ~56 octets never fit 200 with the primary
    assert deliveries(events) == list(enumerate(sent))
    assert receiver.stats.recovered_fec == 3


@pytest.mark.parametrize("mode", ["redundancy", "fec"])
def test_sequence_wrap_at_65535_with_losses(mode: str) -> None:
    config = UdptlConfig(ec_mode=mode, peer_max_datagram=1400)
    sent = images(20)
    events, receiver = _link(config, sent, {4, 5, 7, 12}, seq=65530)
    expected = [((65530 + i) % 65536, ifp) for i, ifp in enumerate(sent)]
    assert deliveries(events) == expected
    assert receiver.stats.unrecoverable == 0


@pytest.mark.parametrize("mode", ["redundancy", "fec"])
def test_packets_lost_at_the_very_start_of_a_stream_are_recovered(mode: str) -> None:
    sent = images(12)
    events, receiver = _link(UdptlConfig(ec_mode=mode), sent, {0, 1})
    assert deliveries(events) == list(enumerate(sent))
    assert receiver.stats.recovered_redundancy + receiver.stats.recovered_fec == 2


def test_first_datagram_mid_stream_recovers_what_its_redundancy_carries() -> None:
    sender, receiver = UdptlSender(seq=1000), UdptlReceiver()
    sent = images(6)
    datagrams = [sender.send(ifp) for ifp in sent]
    events = receiver.receive(datagrams[5], 0.0)
    assert deliveries(events) == [(1000 + i, sent[i]) for i in range(1, 6)]


def test_a_huge_sequence_jump_restarts_the_receiver_instead_of_losing_everything() -> None:
    receiver = UdptlReceiver()
    a, b = UdptlSender(seq=100), UdptlSender(seq=100 + RESYNC_DISTANCE + 500)
    for ifp in images(3):
        receiver.receive(a.send(ifp), 0.0)
    sent = images(3, seed=9)
    out = []
    for ifp in sent:
        out += deliveries(receiver.receive(b.send(ifp), 0.0))
    assert out == [(100 + RESYNC_DISTANCE + 500 + i, ifp) for i, ifp in enumerate(sent)]
    assert receiver.stats.resyncs == 1


def test_malformed_datagram_is_counted_and_changes_nothing() -> None:
    sender, receiver = UdptlSender(), UdptlReceiver()
    sent = images(2)
    receiver.receive(sender.send(sent[0]), 0.0)
    with pytest.raises(UdptlError):
        receiver.receive(b"\x00\x01\x05\x04", 0.0)
    assert deliveries(receiver.receive(sender.send(sent[1]), 0.0)) == [(1, sent[1])]
    assert receiver.stats.malformed == 1
    assert receiver.stats.received == 2


def test_empty_secondaries_from_a_peer_are_ignored() -> None:
    receiver = UdptlReceiver()
    data = b"\x00\x01\x01\x04\x00\x01\x00"  # seq 1, primary CED, one zero-length secondary
    assert deliveries(receiver.receive(data, 0.0)) == []  # seq 0 stays missing, not delivered empty
    assert receiver.poll(10.0) == [Gap(0, 1), Delivered(1, CED)]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["none", "redundancy", "fec"]),
    st.lists(st.booleans(), min_size=1, max_size=120),
    st.integers(0, 65535),
)
def test_whatever_is_lost_deliveries_are_in_order_and_exact(mode: str, lost: list[bool], start: int) -> None:
    udptl_a, udptl_b = Udptl(UdptlConfig(ec_mode=mode), seq=start), Udptl(UdptlConfig(ec_mode=mode))
    sent = images(len(lost), size=20)
    events: list[Delivered | Gap] = []
    for i, (ifp, drop) in enumerate(zip(sent, lost, strict=True)):
        data = udptl_a.send(ifp)
        if not drop:
            events += udptl_b.receive(data, i * 0.02)
    events += udptl_b.poll(1000.0)
    got = deliveries(events)
    offsets = [(seq - start) % 65536 for seq, _ in got]
    assert offsets == sorted(set(offsets))
    assert all(sent[off] == ifp for off, (_, ifp) in zip(offsets, got, strict=True))
    received = [i for i, d in enumerate(lost) if not d]
    assert set(received) <= set(offsets)
