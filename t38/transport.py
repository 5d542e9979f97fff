"""The asyncio edge of T.38 over UDPTL: one UDP socket per call, and an impairment relay for tests.

:class:`UdptlEndpoint` moves datagrams and a 20 ms clock between the event loop and two sans-I/O cores:
the UDPTL codec (:mod:`t38.udptl`) and a fax session (anything shaped like :class:`T38Session`, in
practice :class:`t38.engine.FaxSession` in T.38 mode). :class:`ImpairmentRelay` sits between two
endpoints on 127.0.0.1 and applies a seeded :class:`t38.impairment.Impairment` to each direction.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Protocol, cast

from .audio_transport import MediaClock
from .impairment import Impairment
from .latch import DEFAULT_PROBATION, LatchStats, MediaLatch, Verdict, udptl_sequence
from .udptl import Delivered, Gap, Udptl, UdptlConfig, UdptlError, UdptlSizeError, UdptlStats

__all__ = [
    "SAMPLES_PER_TICK",
    "TICK_SECONDS",
    "ImpairmentRelay",
    "RelayStats",
    "T38Session",
    "Ticker",
    "TransportStats",
    "UdptlEndpoint",
]

log = logging.getLogger(__name__)

TICK_SECONDS = 0.020
"""The media clock: spandsp is advanced by one 20 ms frame at a time, as Asterisk and FreeSWITCH do."""
SAMPLES_PER_TICK = 160
"""20 ms at 8000 samples/s."""
SAMPLE_RATE = 8000
"""The session's clock runs in 8 kHz samples (G.711 line time)."""
MAX_CATCH_UP_TICKS = 50
"""After a stall longer than this many ticks (1 s) the clock is re-based instead of replaying every tick."""

Address = tuple[str, int]


class T38Session(Protocol):
    """What the endpoint needs from a fax session in T.38 mode (t38.engine.FaxSession fits)."""

    @property
    def done(self) -> bool: ...

    @property
    def result(self) -> object: ...

    def t38_rx(self, ifp: bytes, seq: int) -> None: ...

    def advance(self, samples: int) -> None: ...

    def take_t38_tx(self) -> list[bytes]: ...


@dataclass
class TransportStats(UdptlStats):
    """UDPTL counters of one call plus what only the socket edge sees."""

    foreign: int = 0
    """Datagrams from an address other than the negotiated peer, dropped."""
    oversize: int = 0
    """IFP packets from the engine too large for the peer's T38FaxMaxDatagram, not sent."""
    send_errors: int = 0
    """Errors the socket reported (for instance ICMP port unreachable from the peer)."""
    session_errors: int = 0
    """Exceptions raised by the fax session while fed or clocked (logged, the call goes on)."""
    latch: LatchStats | None = None
    """Symmetric UDPTL only: what was learned about the peer's source (t38.latch)."""


class Ticker:
    """A drift-free periodic clock: tick k is due at ``start + k * period``, however late callbacks run.

    Sleeping 20 ms after each tick would add the callback latency every time and slowly fall behind the
    peer's clock; scheduling against absolute deadlines keeps the long-run rate exact."""

    def __init__(
        self, start: float, period: float = TICK_SECONDS, max_catch_up: int = MAX_CATCH_UP_TICKS
    ) -> None:
        if period <= 0:
            raise ValueError("period must be positive")
        self.period = period
        self.max_catch_up = max_catch_up
        self._start = start
        self._index = 1  # tick 0 is `start` itself; the first tick falls one period later

    @property
    def deadline(self) -> float:
        """When the next tick is due."""
        return self._start + self._index * self.period

    def due(self, now: float) -> int:
        """How many ticks are due at ``now`` (0 if called early); consumes them.

        After a stall of more than ``max_catch_up`` ticks only that many are replayed and the schedule is
        re-based on ``now``."""
        if now < self.deadline:
            return 0
        count = int((now - self.deadline) / self.period) + 1
        if count > self.max_catch_up:
            log.warning("UDPTL clock stalled for %d ticks; re-basing", count)
            self._start = now
            self._index = 1
            return self.max_catch_up
        self._index += count
        return count


def _normalise(addr: tuple[str, int] | tuple[str, int, int, int]) -> Address:
    """(host, port) with the host as a canonical IP literal, so IPv4 and IPv6 forms compare equal."""
    return str(ipaddress.ip_address(addr[0])), int(addr[1])


class UdptlEndpoint(asyncio.DatagramProtocol):
    """Binds a fax session to a UDP socket and one peer address for one T.38 call.

    Datagrams from the peer are decoded and their IFP packets fed to ``session.t38_rx`` in sequence
    order; every 20 ms the session's clock is advanced by 160 samples and the IFP packets it produced
    are sent, each in its own datagram (and the last control datagram repeated while the session stays
    silent). Malformed datagrams and datagrams from anyone but the peer are counted and dropped; nothing
    else happens to the call.

    With ``symmetric=True`` the peer is the source the :class:`t38.latch.MediaLatch` learns (a peer
    behind a NAT sends from the NAT's address, not the one in its SDP): until then we send to the SDP's
    address, afterwards to the learned one, and datagrams from anyone else are dropped."""

    def __init__(
        self,
        session: T38Session,
        config: UdptlConfig | None = None,
        *,
        tick: float = TICK_SECONDS,
        samples_per_tick: int = SAMPLES_PER_TICK,
        name: str = "udptl",
        symmetric: bool = False,
        probation: int = DEFAULT_PROBATION,
    ) -> None:
        self.session = session
        self.config = config or UdptlConfig()
        self.name = name
        self._udptl = Udptl(self.config)
        self._extra = TransportStats()
        self._tick = tick
        self._samples = samples_per_tick
        self._peer: Address | None = None
        self._latch = MediaLatch(probation=probation) if symmetric else None
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: Ticker | None = None
        self._clock: MediaClock | None = None
        self._peer_raw: object = None  # the peer's address as the socket reports it (fast compare)
        self._timer: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[None] | None = None
        self._closed = False
        self._media_time = 0.0  # seconds of session clock (samples advanced / 8000), exact

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(
        self,
        local_addr: Address = ("127.0.0.1", 0),
        peer_addr: Address | None = None,
        *,
        sock: socket.socket | None = None,
    ) -> Address:
        """Bind the socket (or adopt ``sock``, a port already announced in SDP); returns the bound
        (host, port). The 20 ms clock starts once the peer is known.

        The peer may be given later with :meth:`set_peer` (we must offer our port before we know theirs)."""
        if self._transport is not None:
            raise RuntimeError("endpoint already started")
        self._loop = asyncio.get_running_loop()
        self._done = self._loop.create_future()
        if sock is not None:
            sock.setblocking(False)
            await self._loop.create_datagram_endpoint(lambda: self, sock=sock)
        else:
            await self._loop.create_datagram_endpoint(lambda: self, local_addr=local_addr)
        if peer_addr is not None:
            self.set_peer(peer_addr)
        return self.local_address

    def set_peer(self, peer_addr: Address) -> None:
        """Send to, and accept only from, this (IP literal, port); starts the clock the first time.
        Symmetric: the SDP's address, where media goes until the peer's real source is learned (a new
        address starts learning again).

        The session is not clocked before media can flow, so nothing it sends is lost for want of a peer.
        At the standard 20 ms tick the endpoint joins the process's shared media clock (one timer for
        every RTP and UDPTL stream, t38.audio_transport.MediaClock); another tick (tests) gets a timer
        of its own."""
        if self._latch is not None:
            if self._latch.set_sdp(peer_addr) or self._peer is None:
                self._peer, self._peer_raw = self._latch.target, None
        else:
            self._peer = _normalise(peer_addr)
            self._peer_raw = None
        if self._loop is None or self._closed or self._ticker is not None or self._clock is not None:
            return
        if self._tick == TICK_SECONDS and self._samples == SAMPLES_PER_TICK:
            self._clock = MediaClock.shared(self._loop)
            self._clock.register(self)
        else:
            self._ticker = Ticker(self._loop.time(), self._tick)
            self._timer = self._loop.call_at(self._ticker.deadline, self._on_tick)

    def on_media_tick(self, now: float) -> None:
        """One 20 ms step from the shared media clock (which runs missed ticks back to back)."""
        if self._closed:
            return
        try:
            self._step(now, 1)
        except Exception:
            self._extra.session_errors += 1
            log.exception("%s: fax session failed on the clock tick", self.name)

    def on_media_error(self, exc: Exception) -> None:
        self._extra.session_errors += 1

    @property
    def peer(self) -> Address | None:
        """Where our datagrams go (symmetric: the learned source once locked, the SDP's before)."""
        return self._peer

    @property
    def symmetric(self) -> bool:
        return self._latch is not None

    @property
    def latch(self) -> MediaLatch | None:
        return self._latch

    @property
    def local_address(self) -> Address:
        if self._transport is None:
            raise RuntimeError("endpoint not started")
        return _normalise(self._transport.get_extra_info("sockname"))

    def close(self) -> None:
        """Stop the clock and close the socket (the session itself is the caller's to close)."""
        self._closed = True
        if self._clock is not None:
            self._clock.unregister(self)
            self._clock = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
        if self._done is not None and not self._done.done():
            self._done.cancel()

    async def wait_done(self) -> None:
        """Wait until the session reports done (raises CancelledError if closed first)."""
        if self._done is None:
            raise RuntimeError("endpoint not started")
        await asyncio.shield(self._done)

    def stats(self) -> TransportStats:
        """A snapshot of the call's counters (dataclasses.asdict() gives the JSON for the call report)."""
        snapshot = TransportStats(**vars(self._udptl.stats))
        for name in ("foreign", "oversize", "send_errors", "session_errors"):
            setattr(snapshot, name, getattr(self._extra, name))
        if self._latch is not None:
            snapshot.latch = self._latch.stats()
        return snapshot

    # -- asyncio.DatagramProtocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._closed or self._loop is None:
            return
        # The raw tuple the socket reports is compared first: parsing the address of every datagram
        # showed in profiles of hundreds of calls; only an unfamiliar form is normalised.
        if addr is not self._peer_raw and addr != self._peer_raw:
            if self._latch is not None:
                if not self._learn(data, addr):
                    return
            elif self._peer is None or _normalise(addr) != self._peer:
                self._extra.foreign += 1
                log.debug("%s: dropped %d octets from stranger %s", self.name, len(data), addr)
                return
            else:
                self._peer_raw = addr
        try:
            events = self._udptl.receive(data, self._loop.time())
        except UdptlError as exc:
            log.debug("%s: dropped malformed datagram from %s: %s", self.name, addr, exc)
            return
        self._feed(events)

    def _learn(self, data: bytes, addr: tuple[str, int]) -> bool:
        """Symmetric UDPTL: whether a datagram from an unfamiliar address is the peer's (t38.latch)."""
        assert self._latch is not None
        verdict = self._latch.check(addr, udptl_sequence(data))
        if not verdict.accepted:
            self._extra.foreign += 1
            if verdict is Verdict.FOREIGN and self._latch.dropped_locked == 1:
                log.info("%s: dropped UDPTL from %s: locked to %s", self.name, addr, self._peer)
            return False
        if verdict is Verdict.LOCKED:
            self._peer = self._latch.target
            log.info("%s: UDPTL peer learned: %s (%s)", self.name, self._peer, self._latch.learned_by)
        self._peer_raw = addr
        return True

    def error_received(self, exc: Exception) -> None:
        self._extra.send_errors += 1
        log.debug("%s: socket error %s", self.name, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- the clock ------------------------------------------------------------------------------------------

    def _on_tick(self) -> None:
        self._timer = None
        if self._closed or self._loop is None or self._ticker is None:
            return
        now = self._loop.time()
        try:
            self._step(now, self._ticker.due(now))
        except Exception:
            self._extra.session_errors += 1
            log.exception("%s: fax session failed on the clock tick", self.name)
        finally:
            if not self._closed:
                self._timer = self._loop.call_at(self._ticker.deadline, self._on_tick)

    def _step(self, now: float, ticks: int) -> None:
        self._feed(self._udptl.poll(now))
        for _ in range(ticks):
            self.session.advance(self._samples)
            self._media_time += self._samples / SAMPLE_RATE
            self._send(self.session.take_t38_tx())
            self._resend()
        if self.session.done and self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _feed(self, events: list[Delivered | Gap]) -> None:
        for event in events:
            if isinstance(event, Delivered):
                try:
                    self.session.t38_rx(event.ifp, event.seq)
                except Exception:
                    self._extra.session_errors += 1
                    log.exception("%s: fax session rejected IFP seq %d", self.name, event.seq)
            else:
                log.debug("%s: %d packet(s) lost from seq %d", self.name, event.count, event.seq)

    def _send(self, packets: list[bytes]) -> None:
        for ifp in packets:
            if self._peer is None or self._transport is None:
                log.debug("%s: no peer yet, IFP not sent", self.name)
                continue
            try:
                datagram = self._udptl.send(ifp, self._media_time)
            except UdptlSizeError as exc:
                self._extra.oversize += 1
                log.error("%s: %s", self.name, exc)
                continue
            self._transport.sendto(datagram, self._peer)

    def _resend(self) -> None:
        """Repeat the last control datagram while the session is silent (UdptlConfig.idle_resends)."""
        for datagram in self._udptl.resends_due(self._media_time):
            if self._peer is not None and self._transport is not None:
                self._transport.sendto(datagram, self._peer)


# ---------------------------------------------------------------------------------------------------------
# Impairment relay
# ---------------------------------------------------------------------------------------------------------


@dataclass
class RelayStats:
    """What the relay did to one direction."""

    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0


class _RelaySide(asyncio.DatagramProtocol):
    """One socket of the relay: takes datagrams from its own side and hands them to the relay."""

    def __init__(self, relay: ImpairmentRelay, side: str) -> None:
        self.relay = relay
        self.side = side
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay._arrived(self.side, data, _normalise(addr))


class ImpairmentRelay:
    """A UDP relay on 127.0.0.1 that impairs each direction with its own seeded :class:`Impairment`.

    Side A sends to :attr:`addr_for_a` and receives from it; side B likewise with :attr:`addr_for_b`.
    So each endpoint's peer is the relay's socket facing it. Given a seed, the fate of the n-th packet in
    each direction is fixed; which packets overtake each other also depends on real timing."""

    def __init__(self, a_to_b: Impairment | None = None, b_to_a: Impairment | None = None) -> None:
        self.impairments = {"a": a_to_b or Impairment(), "b": b_to_a or Impairment()}
        self.stats = {"a": RelayStats(), "b": RelayStats()}
        self._ends: dict[str, Address | None] = {"a": None, "b": None}
        self._sides: dict[str, _RelaySide] = {}
        self._pending: set[asyncio.TimerHandle] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, a_addr: Address | None = None, b_addr: Address | None = None) -> None:
        """Bind both sockets; an end not given is learnt from the first datagram on its side."""
        self._loop = asyncio.get_running_loop()
        self._ends = {
            "a": None if a_addr is None else _normalise(a_addr),
            "b": None if b_addr is None else _normalise(b_addr),
        }
        for side in ("a", "b"):
            proto = _RelaySide(self, side)
            await self._loop.create_datagram_endpoint(lambda p=proto: p, local_addr=("127.0.0.1", 0))
            self._sides[side] = proto

    def _address(self, side: str) -> Address:
        transport = self._sides[side].transport
        if transport is None:
            raise RuntimeError("relay not started")
        return _normalise(transport.get_extra_info("sockname"))

    @property
    def addr_for_a(self) -> Address:
        """Where side A sends (its peer address)."""
        return self._address("a")

    @property
    def addr_for_b(self) -> Address:
        """Where side B sends (its peer address)."""
        return self._address("b")

    def close(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        for proto in self._sides.values():
            if proto.transport is not None:
                proto.transport.close()

    def _arrived(self, side: str, data: bytes, addr: Address) -> None:
        if self._loop is None:
            return
        if self._ends[side] is None:
            self._ends[side] = addr
        elif self._ends[side] != addr:
            return  # not from the endpoint this side serves
        other = "b" if side == "a" else "a"
        stats = self.stats[side]
        stats.received += 1
        times = self.impairments[side].plan(self._loop.time())
        if not times:
            stats.dropped += 1
        if len(times) > 1:
            stats.duplicated += 1
        for when in times:
            self._schedule(when, other, data)

    def _schedule(self, when: float, side: str, data: bytes) -> None:
        assert self._loop is not None
        holder: list[asyncio.TimerHandle] = []

        def deliver() -> None:
            self._pending.discard(holder[0])
            self._forward(side, data)

        holder.append(self._loop.call_at(when, deliver))
        self._pending.add(holder[0])

    def _forward(self, side: str, data: bytes) -> None:
        """Send out of ``side``'s socket to the endpoint of that side."""
        dest = self._ends[side]
        transport = self._sides[side].transport
        if dest is None or transport is None or transport.is_closing():
            return
        self.stats["a" if side == "b" else "b"].forwarded += 1
        transport.sendto(data, dest)
