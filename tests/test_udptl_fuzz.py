"""Fuzzing the UDPTL decoder and receiver: bad input from the network raises UdptlError and nothing else.

Never IndexError, struct.error, a hang or a corrupted receiver: a malformed datagram is the peer's fault,
counted and dropped by the transport (T.38 §9.1 gives no other recourse).
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from t38.udptl import (
    Delivered,
    FecInfo,
    UdptlConfig,
    UdptlError,
    UdptlPacket,
    UdptlReceiver,
    UdptlSender,
    classify_ifp,
    ifp_length,
)

FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_ifp = st.binary(min_size=1, max_size=60)


@st.composite
def valid_datagrams(draw: st.DrawFn) -> bytes:
    seq = draw(st.integers(0, 65535))
    primary = draw(_ifp)
    shape = draw(st.sampled_from(["none", "redundancy", "fec"]))
    if shape == "redundancy":
        return bytes(UdptlPacket(seq, primary, tuple(draw(st.lists(_ifp, min_size=1, max_size=5)))))
    if shape == "fec":
        parity = tuple(draw(st.lists(st.binary(max_size=60), max_size=4)))
        return bytes(UdptlPacket(seq, primary, fec=FecInfo(draw(st.integers(0, 32)), parity)))
    return bytes(UdptlPacket(seq, primary))


@st.composite
def mutated_datagrams(draw: st.DrawFn) -> bytes:
    """A valid datagram with a few octets overwritten, inserted, deleted, or the tail cut off."""
    data = bytearray(draw(valid_datagrams()))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "insert", "delete", "truncate", "flip"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xBF, 0xC0, 0xC1, 0xC4, 0xC5, 0xFF]))
        elif op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=3))
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def _decode_or_udptl_error(data: bytes) -> UdptlPacket | None:
    try:
        packet = UdptlPacket.parse(data)
    except UdptlError:
        return None
    # whatever decodes must encode again and decode to the same packet
    if all(packet.secondary):
        assert UdptlPacket.parse(bytes(packet)) == packet
    return packet


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_udptl_error_only(data: bytes) -> None:
    _decode_or_udptl_error(data)


@FUZZ
@given(mutated_datagrams())
def test_mutated_valid_packets_decode_or_raise_udptl_error_only(data: bytes) -> None:
    _decode_or_udptl_error(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=2, max_size=4).map(lambda head: head + b"\xc4" * 20))
def test_fragment_lengths_beyond_the_datagram_raise_instead_of_reading_past_it(data: bytes) -> None:
    _decode_or_udptl_error(data)


@FUZZ
@given(st.binary(max_size=80), st.integers(0, 3))
def test_ifp_inspection_never_raises(ifp: bytes, version: int) -> None:
    classify_ifp(ifp)
    length = ifp_length(ifp, version)
    assert length is None or 1 <= length <= len(ifp)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(mutated_datagrams(), st.binary(max_size=40)), min_size=1, max_size=12))
def test_receiver_fed_garbage_between_good_datagrams_stays_in_order(noise: list[bytes]) -> None:
    config = UdptlConfig(ec_mode="fec")
    sender, receiver = UdptlSender(config, seq=65530), UdptlReceiver(config)
    good = [sender.send(bytes([0xD0, i])) for i in range(len(noise))]
    delivered = []
    malformed = 0
    for i, (datagram, junk) in enumerate(zip(good, noise, strict=True)):
        for data in (junk, datagram):
            try:
                events = receiver.receive(data, i * 0.02)
            except UdptlError:
                malformed += 1
                continue
            delivered += [e for e in events if isinstance(e, Delivered)]
    delivered += [e for e in receiver.poll(1000.0) if isinstance(e, Delivered)]
    assert receiver.stats.malformed == malformed
    # junk that decodes may inject packets or restart the numbering (a counted resync), but between
    # restarts the sequence handed on only moves forward
    steps = [(b.seq - a.seq) % 65536 for a, b in itertools.pairwise(delivered)]
    assert sum(1 for d in steps if not 0 < d < 32768) <= receiver.stats.resyncs
