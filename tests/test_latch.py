"""The symmetric-media learner (t38.latch): strict-RTP-style probation, without sockets."""

from __future__ import annotations

import pytest

from t38.latch import MediaLatch, Verdict, rtp_sequence, udptl_sequence

SDP = ("192.0.2.10", 4000)
NAT = ("198.51.100.7", 31000)
EVIL = ("203.0.113.66", 6666)


def feed(latch: MediaLatch, source: tuple[str, int], seqs: range | list[int]) -> list[Verdict]:
    return [latch.check(source, s) for s in seqs]


def test_a_datagram_from_the_sdp_address_locks_at_once() -> None:
    latch = MediaLatch(SDP)
    assert latch.target == SDP and not latch.locked
    assert latch.check(SDP, 17) is Verdict.LOCKED
    assert latch.locked and latch.target == SDP and latch.learned_by == "sdp"
    assert latch.check(SDP, 18) is Verdict.ACCEPT


def test_another_source_locks_after_probation_and_media_then_goes_there() -> None:
    latch = MediaLatch(SDP)
    assert feed(latch, NAT, range(100, 103)) == [Verdict.PROBATION] * 3
    assert latch.target == SDP  # still learning: our media goes to the SDP's address
    assert latch.check(NAT, 103) is Verdict.LOCKED
    assert latch.target == NAT and latch.learned_by == "latched"
    st = latch.stats()
    assert (st.sdp_addr, st.learned_addr, st.dropped_learning, st.dropped_locked) == (SDP, NAT, 3, 0)


def test_sequence_numbers_wrap_around_during_probation() -> None:
    latch = MediaLatch(SDP, probation=3)
    assert feed(latch, NAT, [65534, 65535, 0]) == [Verdict.PROBATION, Verdict.PROBATION, Verdict.LOCKED]


def test_an_interleaving_hijacker_never_locks() -> None:
    latch = MediaLatch(SDP)
    for k in range(50):
        assert latch.check(NAT, 1000 + k) is Verdict.PROBATION
        assert latch.check(EVIL, 5000 + k) is Verdict.PROBATION
    assert not latch.locked and latch.target == SDP and latch.stats().dropped_learning == 100


def test_a_sequence_gap_restarts_probation() -> None:
    latch = MediaLatch(SDP)
    assert feed(latch, NAT, [10, 11, 12, 14, 15, 16]) == [Verdict.PROBATION] * 6
    assert latch.check(NAT, 17) is Verdict.LOCKED  # 14, 15, 16, 17


def test_a_repeated_sequence_number_neither_counts_nor_restarts() -> None:
    latch = MediaLatch(SDP)  # UDPTL repeats its last control datagram with the same seq-number
    assert feed(latch, NAT, [7, 8, 8, 8, 9]) == [Verdict.PROBATION] * 5
    assert latch.check(NAT, 10) is Verdict.LOCKED


def test_the_sdp_address_wins_over_a_source_on_probation() -> None:
    latch = MediaLatch(SDP)
    feed(latch, NAT, range(3))
    assert latch.check(SDP, 500) is Verdict.LOCKED
    assert latch.check(NAT, 3) is Verdict.FOREIGN and latch.target == SDP


def test_once_locked_other_sources_are_dropped_and_counted() -> None:
    latch = MediaLatch(SDP)
    feed(latch, NAT, range(4))
    assert latch.target == NAT
    assert feed(latch, EVIL, range(20)) == [Verdict.FOREIGN] * 20
    assert feed(latch, SDP, range(3)) == [Verdict.FOREIGN] * 3  # even the SDP's own address, now
    assert latch.target == NAT and latch.stats().dropped_locked == 23
    assert latch.check(NAT, 4) is Verdict.ACCEPT


def test_a_new_sdp_address_learns_again_and_the_same_one_keeps_the_lock() -> None:
    latch = MediaLatch(SDP)
    feed(latch, NAT, range(4))
    assert latch.set_sdp(SDP) is False and latch.target == NAT  # a re-INVITE that changes nothing
    new_sdp = ("192.0.2.10", 4002)  # the T.38 switch, say
    assert latch.set_sdp(new_sdp) is True
    assert not latch.locked and latch.target == new_sdp and latch.stats().relearns == 1
    assert latch.check(NAT, 4) is Verdict.PROBATION
    assert latch.check(new_sdp, 0) is Verdict.LOCKED and latch.target == new_sdp


def test_nothing_is_accepted_before_the_sdp_address_is_known() -> None:
    latch = MediaLatch()
    assert latch.target is None
    assert feed(latch, NAT, range(10)) == [Verdict.PROBATION] * 10
    latch.set_sdp(SDP)
    assert latch.stats().relearns == 0 and latch.check(SDP, 0) is Verdict.LOCKED


def test_a_datagram_without_a_sequence_number_locks_only_from_the_sdp_address() -> None:
    latch = MediaLatch(SDP, probation=1)
    assert latch.check(NAT, None) is Verdict.PROBATION
    assert latch.check(SDP, None) is Verdict.LOCKED


def test_addresses_compare_in_canonical_form() -> None:
    latch = MediaLatch(("::FFFF:0:1", 4000))
    assert latch.sdp_addr == ("::ffff:0:1", 4000)
    assert latch.check(("::ffff:0:1", 4000, 0, 0), 1) is Verdict.LOCKED


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="probation"):
        MediaLatch(SDP, probation=0)
    with pytest.raises(ValueError):
        MediaLatch(("not-an-ip", 1))


def test_sequence_numbers_are_read_from_rtp_and_udptl_headers() -> None:
    assert rtp_sequence(bytes([0x80, 0, 0x12, 0x34]) + bytes(8)) == 0x1234
    assert rtp_sequence(bytes([0x40, 0, 0x12, 0x34]) + bytes(8)) is None  # version 1
    assert rtp_sequence(b"\x80\x00") is None
    assert udptl_sequence(b"\x01\x02\x01\x00") == 0x0102 and udptl_sequence(b"\x01") is None
