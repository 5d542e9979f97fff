"""The UDPTL endpoint and the impairment relay on 127.0.0.1 with real sockets, and their sans-I/O parts."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from t38.impairment import Impairment
from t38.transport import ImpairmentRelay, T38Session, Ticker, UdptlEndpoint
from t38.udptl import UdptlConfig, UdptlPacket


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


FAST_TICK = 0.005  # tests run the 20 ms media clock four times faster; the logic is the same
LOOPBACK = ("127.0.0.1", 0)


class FakeSession:
    """Sends ``count`` numbered image IFPs, one per tick, then idle indicators; done once it has the
    peer's ``count`` packets. Records everything it is fed."""

    def __init__(self, count: int, fail_on_advance: int | None = None) -> None:
        self.count = count
        self.advances = 0
        self.sent = 0
        self.received: list[tuple[int, bytes]] = []
        self.fail_on_advance = fail_on_advance
        self.result: object = None

    @property
    def payload(self) -> list[bytes]:
        return [bytes([0xD0, 0x01, 0xE0]) + i.to_bytes(2, "big") for i in range(self.count)]

    @property
    def done(self) -> bool:
        return len(self.payload_received()) >= self.count

    def payload_received(self) -> list[bytes]:
        return [ifp for _, ifp in self.received if ifp[0] == 0xD0]

    def t38_rx(self, ifp: bytes, seq: int) -> None:
        self.received.append((seq, ifp))

    def advance(self, samples: int) -> None:
        self.advances += 1
        if self.advances == self.fail_on_advance:
            raise RuntimeError("engine hiccup")

    def take_t38_tx(self) -> list[bytes]:
        if self.sent < self.count:
            self.sent += 1
            return [self.payload[self.sent - 1]]
        return [bytes([0x00])]  # no-signal indicator keeps datagrams (and their redundancy) flowing


def _session_fits_protocol(session: FakeSession) -> T38Session:
    return session


async def _pair(
    a: FakeSession, b: FakeSession, config: UdptlConfig | None = None
) -> tuple[UdptlEndpoint, UdptlEndpoint]:
    ea = UdptlEndpoint(_session_fits_protocol(a), config, tick=FAST_TICK, name="a")
    eb = UdptlEndpoint(b, config, tick=FAST_TICK, name="b")
    await ea.start(LOOPBACK)
    await eb.start(LOOPBACK)
    return ea, eb


async def _wait_both(ea: UdptlEndpoint, eb: UdptlEndpoint) -> None:
    await asyncio.wait_for(asyncio.gather(ea.wait_done(), eb.wait_done()), timeout=10)


# --- the clock -------------------------------------------------------------------------------------------


def test_ticker_is_drift_free_when_callbacks_run_late() -> None:
    ticker = Ticker(start=100.0, period=0.02)
    assert ticker.due(100.019) == 0
    assert ticker.due(100.027) == 1  # 7 ms late
    assert ticker.deadline == pytest.approx(100.04)  # the next one is still on the 20 ms grid
    assert ticker.due(100.0655) == 2  # ticks at 100.04 and 100.06 both due
    assert ticker.deadline == pytest.approx(100.08)
    total = 3 + sum(ticker.due(100.08 + 0.02 * k + 0.0199) for k in range(1000))
    assert total == 1003  # 1000 late callbacks later, not one tick gained or lost


def test_ticker_rebases_after_a_long_stall_instead_of_bursting() -> None:
    ticker = Ticker(start=0.0, period=0.02, max_catch_up=50)
    assert ticker.due(10.0) == 50
    assert ticker.deadline == pytest.approx(10.02)


# --- the impairment model --------------------------------------------------------------------------------


def test_same_seed_same_fates() -> None:
    def fates(seed: int) -> list[list[float]]:
        imp = Impairment(
            loss=0.2, burst_loss=0.1, burst_len=3, jitter_ms=30, reorder=0.1, duplicate=0.1, seed=seed
        )
        return [imp.plan(i * 0.02) for i in range(500)]

    assert fates(7) == fates(7)
    assert fates(7) != fates(8)


def test_loss_rate_and_duplication_follow_the_settings() -> None:
    imp = Impairment(loss=0.3, duplicate=0.1, seed=1)
    plans = [imp.plan(0.0) for _ in range(20000)]
    lost = sum(1 for p in plans if not p) / len(plans)
    doubled = sum(1 for p in plans if len(p) == 2) / len(plans)
    assert 0.28 < lost < 0.32
    assert 0.06 < doubled < 0.08  # 10 % of the 70 % that survive


def test_loss_pattern_does_not_depend_on_delay_settings() -> None:
    plain = Impairment(loss=0.2, seed=3)
    jittery = Impairment(loss=0.2, jitter_ms=50, reorder=0.3, seed=3)
    assert [bool(plain.plan(0)) for _ in range(300)] == [bool(jittery.plan(0)) for _ in range(300)]


def test_gilbert_elliott_bursts_have_the_requested_mean_length_and_share() -> None:
    imp = Impairment(burst_loss=0.2, burst_len=4, seed=5)
    lost = [not imp.plan(0.0) for _ in range(50000)]
    bursts = []
    run = 0
    for x in [*lost, False]:
        if x:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    assert 0.18 < sum(lost) / len(lost) < 0.22
    assert 3.5 < sum(bursts) / len(bursts) < 4.5


def test_jitter_and_reordering_delay_deliveries() -> None:
    imp = Impairment(jitter_ms=10, delay_ms=5, reorder=1.0, reorder_ms=100, seed=2)
    for _ in range(100):
        (when,) = imp.plan(1.0)
        assert 1.105 <= when <= 1.115


def test_impairment_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="probability"):
        Impairment(loss=1.5)
    with pytest.raises(ValueError, match="burst_len"):
        Impairment(burst_loss=0.1)


# --- endpoints over loopback -----------------------------------------------------------------------------


@in_loop
async def test_two_endpoints_exchange_packets_in_order() -> None:
    a, b = FakeSession(30), FakeSession(30)
    ea, eb = await _pair(a, b)
    ea.set_peer(eb.local_address)
    eb.set_peer(ea.local_address)
    try:
        await _wait_both(ea, eb)
    finally:
        ea.close()
        eb.close()
    assert b.payload_received() == a.payload
    assert a.payload_received() == b.payload
    seqs = [seq for seq, _ in b.received]
    assert seqs == list(range(len(seqs)))
    stats = eb.stats()
    assert stats.received >= 30 and stats.sent >= 30
    assert stats.unrecoverable == stats.malformed == stats.foreign == 0
    assert set(dataclasses.asdict(stats)) >= {
        "sent", "received", "recovered_redundancy", "recovered_fec", "unrecoverable",
        "malformed", "duplicates", "reordered", "largest_datagram", "foreign",
    }  # fmt: skip


@pytest.mark.parametrize("mode", ["redundancy", "fec"])
@in_loop
async def test_relay_loss_is_recovered_end_to_end(mode: str) -> None:
    a, b = FakeSession(60), FakeSession(60)
    config = UdptlConfig(ec_mode=mode)
    ea, eb = await _pair(a, b, config)
    relay = ImpairmentRelay(
        Impairment(loss=0.2, jitter_ms=2, duplicate=0.05, seed=11),
        Impairment(loss=0.2, jitter_ms=2, duplicate=0.05, seed=12),
    )
    await relay.start(ea.local_address, eb.local_address)
    ea.set_peer(relay.addr_for_a)
    eb.set_peer(relay.addr_for_b)
    try:
        await _wait_both(ea, eb)
    finally:
        ea.close()
        eb.close()
        relay.close()
    assert b.payload_received() == a.payload
    assert a.payload_received() == b.payload
    assert relay.stats["a"].dropped > 0 and relay.stats["b"].dropped > 0
    recovered = [s.recovered_redundancy + s.recovered_fec for s in (ea.stats(), eb.stats())]
    assert all(r > 0 for r in recovered)
    for seqs in ([s for s, _ in a.received], [s for s, _ in b.received]):
        assert seqs == sorted(seqs)


@in_loop
async def test_malformed_datagrams_from_the_peer_are_counted_and_dropped() -> None:
    a, b = FakeSession(20), FakeSession(20)
    ea, eb = await _pair(a, b)
    ea.set_peer(eb.local_address)
    eb.set_peer(ea.local_address)
    # the peer's own socket sends garbage: truncated, a bad length, an absurd count
    garbage = [b"\x00", b"\x00\x01\x09\x04\x00\x00", b"\x00\x01\x01\x04\x00\x7f\x01"]
    assert eb._transport is not None
    for junk in garbage:
        eb._transport.sendto(junk, ea.local_address)
    try:
        await _wait_both(ea, eb)
    finally:
        ea.close()
        eb.close()
    assert ea.stats().malformed == len(garbage)
    assert a.payload_received() == b.payload


@in_loop
async def test_endpoint_adopts_a_socket_bound_before_the_offer() -> None:
    a, b = FakeSession(10), FakeSession(10)
    announced = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    announced.bind(LOOPBACK)
    port = announced.getsockname()[1]
    ea = UdptlEndpoint(a, tick=FAST_TICK)
    eb = UdptlEndpoint(b, tick=FAST_TICK)
    assert await ea.start(sock=announced) == ("127.0.0.1", port)
    await eb.start(LOOPBACK, ea.local_address)
    ea.set_peer(eb.local_address)
    try:
        await _wait_both(ea, eb)
    finally:
        ea.close()
        eb.close()
    assert b.payload_received() == a.payload


@in_loop
async def test_datagrams_from_a_stranger_are_dropped() -> None:
    a, b = FakeSession(20), FakeSession(20)
    ea, eb = await _pair(a, b)
    ea.set_peer(eb.local_address)
    eb.set_peer(ea.local_address)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        stranger.bind(LOOPBACK)
        # a well-formed datagram that would otherwise be delivered as seq 0
        forged = bytes(UdptlPacket(0, bytes([0xD0, 0x01, 0xE0, 0xFF, 0xFF])))
        for _ in range(3):
            stranger.sendto(forged, ea.local_address)
        await _wait_both(ea, eb)
    finally:
        stranger.close()
        ea.close()
        eb.close()
    assert ea.stats().foreign == 3
    assert a.payload_received() == b.payload
    assert bytes([0xD0, 0x01, 0xE0, 0xFF, 0xFF]) not in [ifp for _, ifp in a.received]


@in_loop
async def test_session_error_is_counted_and_the_clock_keeps_running() -> None:
    a, b = FakeSession(10, fail_on_advance=3), FakeSession(10)
    ea, eb = await _pair(a, b)
    ea.set_peer(eb.local_address)
    eb.set_peer(ea.local_address)
    try:
        await _wait_both(ea, eb)
    finally:
        ea.close()
        eb.close()
    assert ea.stats().session_errors == 1
    assert b.payload_received()[-1] == a.payload[-1]


class SaysOnce(FakeSession):
    """Sends one control packet (a CED indicator), then stays silent."""

    def take_t38_tx(self) -> list[bytes]:
        return [bytes([0x04])] if self.advances == 1 else []

    @property
    def done(self) -> bool:
        return self.advances > 40


@in_loop
async def test_silent_session_has_its_last_control_datagram_repeated() -> None:
    a, b = SaysOnce(0), SaysOnce(0)
    ea, eb = await _pair(a, b)
    ea.set_peer(eb.local_address)
    eb.set_peer(ea.local_address)
    try:
        await _wait_both(ea, eb)
        await asyncio.sleep(FAST_TICK * 4)  # let the last copies land
    finally:
        ea.close()
        eb.close()
    copies = len(UdptlConfig().idle_resends)
    assert (ea.stats().sent, ea.stats().resent) == (1, copies)
    assert b.received == [(0, bytes([0x04]))]  # the engine sees CED once
    assert eb.stats().duplicates == copies


@in_loop
async def test_close_stops_the_clock() -> None:
    a = FakeSession(5)
    ea = UdptlEndpoint(a, tick=FAST_TICK)
    await ea.start(LOOPBACK, ("127.0.0.1", 9))
    await asyncio.sleep(FAST_TICK * 4)
    ea.close()
    advances = a.advances
    await asyncio.sleep(FAST_TICK * 4)
    assert advances > 0
    assert a.advances == advances
    with pytest.raises(asyncio.CancelledError):
        await ea.wait_done()


@in_loop
async def test_oversize_ifp_is_counted_not_sent() -> None:
    class Big(FakeSession):
        def take_t38_tx(self) -> list[bytes]:
            oversize = [bytes([0xD0]) * 500] if self.advances == 1 else []
            return oversize + super().take_t38_tx()

    a, b = Big(5), FakeSession(5)
    ea, eb = await _pair(a, b, UdptlConfig(peer_max_datagram=400))
    ea.set_peer(eb.local_address)
    eb.set_peer(ea.local_address)
    try:
        await _wait_both(ea, eb)
    finally:
        ea.close()
        eb.close()
    assert ea.stats().oversize == 1
    assert eb.stats().largest_datagram <= 400 and ea.stats().largest_datagram <= 400


@pytest.mark.parametrize("symmetric", [True, False])
@in_loop
async def test_symmetric_udptl_learns_a_peer_behind_a_nat_and_ignores_a_sprayer(symmetric: bool) -> None:
    """B's SDP names its own socket, but its UDPTL reaches A from a relay's (a NAT's public) socket."""
    a, b = FakeSession(40), FakeSession(40)
    ea = UdptlEndpoint(a, tick=FAST_TICK, name="a", symmetric=symmetric)
    eb = UdptlEndpoint(b, tick=FAST_TICK, name="b")
    await ea.start(LOOPBACK)
    await eb.start(LOOPBACK)
    nat = ImpairmentRelay()
    await nat.start(a_addr=ea.local_address)
    sprayer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sprayer.bind(LOOPBACK)
        ea.set_peer(eb.local_address)  # what B's SDP says
        eb.set_peer(nat.addr_for_b)  # B's datagrams leave through the NAT
        if not symmetric:
            with pytest.raises(TimeoutError):  # 40 packets take 0.2 s at the fast tick
                await asyncio.wait_for(asyncio.gather(ea.wait_done(), eb.wait_done()), timeout=1.0)
            st = ea.stats()
            assert st.received == 0 and st.foreign > 0 and st.latch is None and not a.received
            assert ea.peer == eb.local_address  # still sending where the SDP says, where B drops it
            return
        while ea.latch is not None and not ea.latch.locked:
            await asyncio.sleep(FAST_TICK)
        forged = [bytes(UdptlPacket(k, bytes([0xD0, 0x01, 0xE0, 0xFF, 0xFF]))) for k in range(30)]
        for datagram in forged:  # a stray stream, consecutive seq-numbers: it must not move us
            sprayer.sendto(datagram, ea.local_address)
        await _wait_both(ea, eb)
    finally:
        sprayer.close()
        nat.close()
        ea.close()
        eb.close()
    st = ea.stats()
    assert st.latch is not None and st.latch.learned_by == "latched"
    assert st.latch.learned_addr == nat.addr_for_a and ea.peer == nat.addr_for_a
    assert st.latch.dropped_learning == 3 and st.latch.dropped_locked == 30 and st.foreign == 33
    assert a.payload_received() == b.payload  # all of B's, what was dropped on probation recovered
    assert b.payload_received() == a.payload  # and ours reached B through the NAT
    assert bytes([0xD0, 0x01, 0xE0, 0xFF, 0xFF]) not in [ifp for _, ifp in a.received]
