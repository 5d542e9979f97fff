"""The asyncio edge of G.711 fax passthrough: one RTP socket per call, one media clock per process.

:class:`MediaClock` ticks every 20 ms on absolute deadlines (``t0 + n * 20 ms``), so it never drifts,
and drives every audio call of the event loop from that one timer: a few hundred calls cost one timer
callback per tick, not a few hundred. On each tick every :class:`RtpEndpoint` pulls 20 ms from its
:class:`~t38.engine.FaxSession`, encodes it to G.711 in place behind a reused RTP header and sends it,
reads what its socket holds into its :class:`~t38.rtp.PlayoutBuffer`, then plays one frame out of the
buffer into the session (or tells the modems the samples are missing).

RTP sockets are not watched by the event loop: each tick drains them (at most
:data:`MAX_DATAGRAMS_PER_TICK` each). A packet waits at most one tick in the kernel, well inside the
playout delay, and the loop sleeps between ticks instead of waking for each of the 50 packets a
second of every call. It also bounds what a flood on an RTP port can cost: the extra datagrams stay
in (and overflow) that socket's kernel buffer; no other call is slowed. Once the peer's address is
known the socket is ``connect``-ed to it, so the kernel drops datagrams from anyone else, and packets
go out and come in through :mod:`t38.libc_udp` (no per-packet address parsing or exceptions).

The sans-I/O parts (packet codec, sender state, playout) are in :mod:`t38.rtp`.

When the native path is built (:mod:`t38.native_rtp`), an endpoint keeps its sender and playout state
in a C struct instead, and one C call per tick does all of the above for every endpoint of the clock;
Python hears only about what needs it (a media timeout, the fax result, a first error to log). The
Python tick stays the reference and the fallback; tests run the endpoints on both.

Symmetric RTP (``symmetric=True``, for a peer behind a NAT whose media comes from another address than
its SDP's): the socket stays unconnected while a :class:`t38.latch.MediaLatch` learns the peer's real
source from each datagram's address; our packets go to the SDP's address meanwhile. Once it locks, the
socket is ``connect``-ed to the learned address and everything runs as above. The native path hands the
learning ticks to Python (the C tick builds the packet, Python sends it and reads the socket).
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import os
import socket
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol

from t38 import libc_udp, native_rtp
from t38.engine import FRAME_SAMPLES
from t38.latch import DEFAULT_PROBATION, MediaLatch, Verdict, rtp_sequence
from t38.rtp import (
    HEADER_SIZE,
    MISSING,
    PT_NAMES,
    PT_PCMA,
    PT_PCMU,
    PlayoutBuffer,
    ReceiverStats,
    RtpError,
    RtpSender,
    SenderStats,
)
from t38.spandsp import G711_ALAW, G711_ULAW, SpandspError, ffi, lib

__all__ = [
    "MAX_CATCH_UP_TICKS",
    "MAX_DATAGRAMS_PER_TICK",
    "TICK_SECONDS",
    "AudioSession",
    "MediaClient",
    "MediaClock",
    "RtpEndpoint",
    "RtpStats",
    "SilentSession",
]

log = logging.getLogger(__name__)

TICK_SECONDS = 0.020
"""One G.711 packet and one spandsp step: 160 samples at 8 kHz (RFC 3551 §4.5 default ptime)."""
MAX_CATCH_UP_TICKS = 25
"""Ticks replayed back to back after a stall (500 ms, half the playout window); beyond that the clock
skips ahead and counts the slip. Replaying keeps every call's timeline: the packets a stalled process
owes go out in order, and what its peers sent meanwhile is still in the socket and plays in order. A
skip instead stretches every call of the process by the skipped time (bench/calls.py: with 5, a burst
of 200 call setups per process skipped ~0.5 s of every call already running)."""
MAX_DATAGRAMS_PER_TICK = 32
"""Datagrams read from one RTP socket per tick (a peer sends one; more after a stall on either side)."""
RECV_SIZE = 2048
"""Largest datagram read whole; a longer one is truncated and then fails RTP parsing (malformed)."""
DSCP_EF = 46 << 2
"""IP TOS octet for DSCP EF (RFC 3246), what RTP media is usually marked with."""
DEFAULT_MEDIA_TIMEOUT = 30.0
"""Seconds without RTP before the call is declared dead (T.30 itself gives up after T1/T5 anyway)."""

Address = tuple[str, int]


class AudioSession(Protocol):
    """What an endpoint needs from a fax session in audio mode (:class:`t38.engine.FaxSession` fits)."""

    @property
    def result(self) -> object: ...

    def audio_tx(self, count: int = FRAME_SAMPLES) -> Any: ...

    def audio_rx(self, samples: Any, count: int = FRAME_SAMPLES) -> None: ...

    def audio_missing(self, count: int = FRAME_SAMPLES) -> None: ...


class SilentSession:
    """An :class:`AudioSession` without a modem: sends silence, discards what it hears.

    It keeps RTP flowing on an answered call whose fax engine is not started yet (a receiver waiting
    for its T.38 re-INVITE to be answered), at the cost of one G.711 encode per tick."""

    result = None
    _silence = ffi.new("int16_t[]", FRAME_SAMPLES)

    def audio_tx(self, count: int = FRAME_SAMPLES) -> Any:
        return self._silence

    def audio_rx(self, samples: Any, count: int = FRAME_SAMPLES) -> None:
        pass

    def audio_missing(self, count: int = FRAME_SAMPLES) -> None:
        pass

    def native_audio(self) -> None:
        """No engine for the native RTP path to drive: it sends silence and discards what it hears."""
        return None


class MediaClient(Protocol):
    """Anything the media clock drives."""

    def on_media_tick(self, now: float) -> None:
        """One 20 ms step; ``now`` is the tick's deadline on the loop clock (not the wake-up time)."""

    def on_media_error(self, exc: Exception) -> None:
        """``on_media_tick`` raised: the clock has already unregistered the client."""


class MediaClock:
    """The one drift-free 20 ms clock of an event loop (use :meth:`shared`).

    Deadlines are ``t0 + n * interval`` and ``loop.call_at`` waits for each one, so a late wake-up
    does not push the next one back. When the loop falls behind by whole ticks (a blocked loop, a GC
    pause), the missed ticks run back to back, at most ``max_catch_up`` of them; the rest are skipped
    and counted in ``slipped`` (the far end's playout buffer sees a gap, not a speed change).
    """

    _shared: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaClock]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        interval: float = TICK_SECONDS,
        max_catch_up: int = MAX_CATCH_UP_TICKS,
        history: int = 3000,
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self.interval = interval
        self.max_catch_up = max_catch_up
        self._clients: dict[MediaClient, None] = {}
        self._native_group: native_rtp.NativeGroup | None = None
        self._snapshot: tuple[MediaClient, ...] = ()
        self._handle: asyncio.TimerHandle | None = None
        self._ticking = False
        self._t0 = 0.0
        self._n = 0
        self.ticks = 0
        self.caught_up = 0  # ticks that ran a whole interval or more late (catching up)
        self.slipped = 0  # ticks skipped altogether
        self.lateness: collections.deque[float] = collections.deque(maxlen=history)

    @classmethod
    def shared(cls, loop: asyncio.AbstractEventLoop | None = None) -> MediaClock:
        """The clock of ``loop`` (the running loop by default), created on first use."""
        loop = loop or asyncio.get_running_loop()
        clock = cls._shared.get(loop)
        if clock is None:
            clock = cls._shared[loop] = cls(loop)
        return clock

    @property
    def clients(self) -> int:
        return len(self._snapshot)

    @property
    def running(self) -> bool:
        return self._handle is not None or self._ticking

    def register(self, client: MediaClient) -> None:
        """Start driving ``client`` from the next tick; the first client starts the clock."""
        self._clients[client] = None
        self._snapshot = tuple(self._clients)
        if self._handle is None and not self._ticking:
            self._t0 = self._loop.time()
            self._n = 0
            self._handle = self._loop.call_at(self._t0, self._on_timer)

    def unregister(self, client: MediaClient) -> None:
        """Stop driving ``client`` (it may still get the tick in progress); the last one stops the clock."""
        if client in self._clients:
            del self._clients[client]
            self._snapshot = tuple(self._clients)
        if not self._snapshot:
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            if MediaClock._shared.get(self._loop) is self:  # idle: let the loop go when it closes
                del MediaClock._shared[self._loop]

    def native_group(self) -> native_rtp.NativeGroup:
        """The one client that ticks every native RTP stream of this clock (joined on first use)."""
        if self._native_group is None:
            self._native_group = native_rtp.NativeGroup(self._native_group_empty)
            self.register(self._native_group)
        return self._native_group

    def native_leave(self, member: native_rtp.NativeMember) -> None:
        """Take a stream out of the native group (never creates one: a member may leave twice)."""
        if self._native_group is not None:
            self._native_group.remove(member)

    def _native_group_empty(self, group: native_rtp.NativeGroup) -> None:
        if self._native_group is group:
            self._native_group = None
        self.unregister(group)

    def lateness_percentiles(self, *percentiles: float) -> dict[float, float]:
        """Wake-up lateness over the recent ticks, in milliseconds, for the given percentiles (0-100)."""
        data = sorted(self.lateness)
        if not data:
            return {p: 0.0 for p in percentiles}
        last = len(data) - 1
        return {p: data[min(last, round(p / 100 * last))] * 1000 for p in percentiles}

    def _on_timer(self) -> None:
        self._handle = None
        self._ticking = True
        try:
            self._tick()
        finally:
            self._ticking = False
        if self._snapshot and self._handle is None:
            self._handle = self._loop.call_at(self._t0 + self._n * self.interval, self._on_timer)

    def _tick(self) -> None:
        # One tick per callback. A tick that is already overdue is scheduled all the same: asyncio
        # polls sockets before it runs expired timers, so the packets sent in this tick are received
        # before the next one plays, and missed ticks replay back to back without starving the I/O.
        interval = self.interval
        deadline = self._t0 + self._n * interval
        late = self._loop.time() - deadline
        self.lateness.append(late)
        if late >= interval:
            behind = int(late / interval)  # later deadlines that have passed too
            if behind > self.max_catch_up:
                skipped = behind - self.max_catch_up
                self.slipped += skipped
                self._n += skipped
                deadline += skipped * interval
                log.warning("media clock %.0f ms behind: skipped %d ticks", late * 1000, skipped)
            self.caught_up += 1
        self._n += 1
        self.ticks += 1
        for client in self._snapshot:
            try:
                client.on_media_tick(deadline)
            except Exception as exc:
                log.exception("media client %r failed; no more ticks for it", client)
                self.unregister(client)
                client.on_media_error(exc)


@dataclass(frozen=True, slots=True)
class RtpStats:
    """RTP counters of one call for the call report."""

    local_addr: Address | None
    remote_addr: Address | None
    payload_type: int
    codec: str
    sent: SenderStats
    received: ReceiverStats
    strangers: int  # datagrams before the peer was known, dropped (then the kernel drops them)
    malformed: int  # datagrams from the peer that are not RTP (RFC 3550 §5.1), dropped
    send_errors: int  # datagrams the kernel refused (full socket buffer, unreachable)
    icmp_errors: int
    media_timeout: bool
    #: symmetric RTP only: what was learned about the peer's source (t38.latch.LatchStats as a dict);
    #: ``remote_addr`` stays the SDP's address. After the lock the socket is connected, so the kernel
    #: drops other sources unseen: ``dropped_locked`` counts only what arrived before connect().
    latch: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_send = libc_udp.send
_recv_into = libc_udp.recv_into
_EMPTY = libc_udp.EMPTY
_PACKET_SIZE = HEADER_SIZE + FRAME_SAMPLES

_g711_states: dict[int, Any] = {}
_g711_encode = lib.g711_encode  # bound once: the per-tick C calls go straight to spandsp
_g711_decode = lib.g711_decode


def _g711_state(payload_type: int) -> Any:
    """spandsp's ``g711_state_t`` for a law. Companding is stateless, so one per law serves every call."""
    state = _g711_states.get(payload_type)
    if state is None:
        raw = lib.g711_init(ffi.NULL, G711_ULAW if payload_type == PT_PCMU else G711_ALAW)
        if raw == ffi.NULL:
            raise SpandspError("g711_init failed")
        state = _g711_states[payload_type] = ffi.gc(raw, lib.g711_free)
    return state


def _check_address(addr: Address, what: str) -> Address:
    """An IP literal and a port, the host in the canonical text form the kernel reports back."""
    host, port = addr[0], int(addr[1])
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{what} address must be an IP literal, not {host!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{what} port {port} out of range")
    return (ip.compressed, port)


class RtpEndpoint:
    """One G.711 RTP stream of one call, bound to a fax session in audio mode (:class:`AudioSession`).

    ``await RtpEndpoint(session, local_addr, remote_addr, payload_type).start()`` binds the socket (or
    adopts ``sock``, for a port already put in the SDP) and joins the media clock, which then drives
    both directions (the socket is read on each tick, see the module's docstring). ``remote_addr`` may be
    ``None`` until the answer arrives (:meth:`set_remote`); until then nothing is sent and every datagram
    counts as a stranger. No RTP from the peer for ``media_timeout`` seconds calls ``on_media_timeout``
    with a reason, once; so does a local media error. The session is the caller's to close.
    ``symmetric=True`` learns where the peer's RTP really comes from (see the module's docstring).
    """

    def __init__(
        self,
        session: AudioSession,
        local_addr: Address,
        remote_addr: Address | None,
        payload_type: int = PT_PCMU,
        *,
        playout_ms: int = 60,
        media_timeout: float | None = DEFAULT_MEDIA_TIMEOUT,
        on_media_timeout: Callable[[str], None] | None = None,
        on_session_done: Callable[[AudioSession], None] | None = None,
        clock: MediaClock | None = None,
        sender: RtpSender | None = None,
        tos: int | None = DSCP_EF,
        symmetric: bool = False,
        probation: int = DEFAULT_PROBATION,
    ) -> None:
        if payload_type not in (PT_PCMU, PT_PCMA):
            raise ValueError(f"payload_type must be {PT_PCMU} (PCMU) or {PT_PCMA} (PCMA), not {payload_type}")
        self._session = session
        self._local_request = _check_address(local_addr, "local")
        self._remote = None if remote_addr is None else _check_address(remote_addr, "remote")
        self.payload_type = payload_type
        self.media_timeout = media_timeout
        self.on_media_timeout = on_media_timeout
        self.on_session_done = on_session_done
        self._clock = clock
        self._tos = tos
        self.sender = sender or RtpSender(payload_type)
        self.sender.payload_type = payload_type
        self._playout_ms = playout_ms
        # The native path (t38.native_rtp) keeps the playout state in C; the Python tick keeps it here.
        self._use_native = native_rtp.available() and hasattr(session, "native_audio")
        self.playout: PlayoutBuffer | None = (
            None if self._use_native else PlayoutBuffer(payload_type, delay_ms=playout_ms)
        )
        self._g711 = _g711_state(payload_type)
        # One packet buffer for the whole call: the header is packed and the payload encoded in place.
        self._tx_packet = bytearray(HEADER_SIZE + FRAME_SAMPLES)
        self._tx_cdata = ffi.from_buffer("uint8_t[]", self._tx_packet)
        self._tx_payload = self._tx_cdata + HEADER_SIZE
        self._rx_pcm = ffi.new("int16_t[]", FRAME_SAMPLES)
        self._tx_c = libc_udp.ffi.from_buffer(self._tx_packet)
        self._rx_buf = libc_udp.ffi.new("uint8_t[]", RECV_SIZE)
        self._rx_view = libc_udp.ffi.buffer(self._rx_buf)
        self._fd = -1
        self._connected = False
        self._latch = MediaLatch(probation=probation) if symmetric else None
        self._learning = False  # symmetric, the SDP address known, the source not locked yet
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._local: Address | None = None
        self._last_rx = 0.0
        self._timed_out = False
        self._done_reported = False
        self._closed = False
        self.strangers = 0
        self.malformed = 0
        self.send_errors = 0
        self.icmp_errors = 0
        # The native path (t38.native_rtp): this stream's state in C, and what C points into.
        self._c: Any = None
        self._c_refs: tuple[Any, ...] = ()
        self._c_one: Any = None
        self._c_flags: Any = None
        self._c_session_refs: tuple[Any, ...] = ()

    # --- the fax session ----------------------------------------------------------------------------
    @property
    def session(self) -> AudioSession:
        return self._session

    @session.setter
    def session(self, session: AudioSession) -> None:
        """Swap the session (a receiver's engine starts after its T.38 re-INVITE is refused)."""
        self._session = session
        self._done_reported = False
        if self._c is not None:
            self._bind_native_session()

    @property
    def native(self) -> bool:
        """Whether the C tick (t38.native_rtp) drives this stream rather than the Python one."""
        return self._c is not None

    # --- lifetime -----------------------------------------------------------------------------------
    async def start(self, sock: socket.socket | None = None) -> RtpEndpoint:
        """Bind (or adopt ``sock``), join the event loop and the media clock. Returns ``self``."""
        if self._loop is not None:
            raise RuntimeError("RtpEndpoint already started")
        loop = self._loop = asyncio.get_running_loop()
        if sock is None:
            sock = self._bind(self._local_request)
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        name = sock.getsockname()
        self._local = (name[0], name[1])
        self._last_rx = loop.time()
        if self._use_native:
            self._start_native()
        if self._remote is not None:
            self._aim()
        if self._clock is None:
            self._clock = MediaClock.shared(loop)
        if self._c is not None:
            self._clock.native_group().add(self)
        else:
            self._clock.register(self)
        log.debug("RTP %s:%d -> %s %s", *self._local, self._remote, PT_NAMES[self.payload_type])
        return self

    @classmethod
    async def open(
        cls,
        session: AudioSession,
        local_addr: Address,
        remote_addr: Address | None,
        payload_type: int = PT_PCMU,
        **kwargs: Any,
    ) -> RtpEndpoint:
        """Construct and :meth:`start` in one step."""
        return await cls(session, local_addr, remote_addr, payload_type, **kwargs).start()

    def _bind(self, addr: Address) -> socket.socket:
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if self._tos is not None and family == socket.AF_INET:
                try:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, self._tos)
                except OSError:  # not fatal: marking is a courtesy to the network
                    log.debug("cannot set IP_TOS on the RTP socket")
            sock.bind(addr)
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        """Leave the clock and close the socket. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.detach_clock()
        if self._c is not None:
            self._c.fd = -1
            self._c.fax = self._c.cell = ffi.NULL
        if self._sock is not None:
            self._sock.close()

    def detach_clock(self) -> None:
        """Stop being driven by the media clock (tests drive :meth:`on_media_tick` by hand)."""
        clock, self._clock = self._clock, None
        if clock is None:
            return
        if self._c is not None:
            clock.native_leave(self)
        else:
            clock.unregister(self)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def local_addr(self) -> Address | None:
        return self._local

    @property
    def remote_addr(self) -> Address | None:
        return self._remote

    def set_remote(self, remote_addr: Address, payload_type: int | None = None) -> None:
        """A re-INVITE (or the answer) names the peer's RTP address and maybe another G.711 law.

        Our stream goes on (same SSRC, RFC 3550 §8); the peer's may restart under a new SSRC, which the
        playout buffer handles. The media timeout starts over."""
        self._remote = _check_address(remote_addr, "remote")
        if payload_type is not None and payload_type != self.payload_type:
            if payload_type not in (PT_PCMU, PT_PCMA):
                raise ValueError(f"payload_type must be {PT_PCMU} or {PT_PCMA}, not {payload_type}")
            self.payload_type = payload_type
            self.sender.payload_type = payload_type
            if self.playout is not None:
                self.playout.set_payload_type(payload_type)
            self._g711 = _g711_state(payload_type)
            if self._c is not None:
                self._c.tx_pt = self._c.payload_type = payload_type
                self._c.g711 = self._g711
        if self._loop is not None:
            self._last_rx = self._loop.time()
        self._timed_out = False
        if self._c is not None:
            self._c.last_rx = self._last_rx
            self._c.timed_out = 0
        if self._sock is not None and not self._closed:
            self._aim()

    @property
    def symmetric(self) -> bool:
        return self._latch is not None

    @property
    def latch(self) -> MediaLatch | None:
        return self._latch

    @property
    def target(self) -> Address | None:
        """Where our packets go: the SDP's address, or (symmetric) the source learned once locked."""
        return self._remote if self._latch is None else self._latch.target

    def _aim(self) -> None:
        """The SDP named ``self._remote``: connect to it, or (symmetric) learn unless a lock still holds."""
        assert self._remote is not None
        if self._latch is None:
            self._connect()
            return
        if not self._latch.set_sdp(self._remote) and self._latch.locked:
            return  # the same SDP address (a re-INVITE that changes nothing): what was learned holds
        if self._connected:
            err = libc_udp.disconnect(self._fd)
            if err:
                log.warning("RTP cannot unconnect its socket to learn again: %s", os.strerror(err))
        self._set_connected(False)
        self._set_learning(True)

    def _set_learning(self, learning: bool) -> None:
        self._learning = learning
        if self._c is not None:
            self._c.learning = int(learning)

    def _connect(self) -> None:
        """Tie the socket to the peer: the kernel then drops anyone else's datagrams. What is already
        queued came before we knew the peer and counts as strangers' (as it always did)."""
        assert self._sock is not None and self._remote is not None
        self._set_connected(False)
        self._drain(0.0, limit=1024)  # unconnected: what it reads is counted as strangers', never played
        try:
            self._sock.connect(self._remote)
        except OSError as exc:  # another address family, say: nothing can be sent to that peer
            if self._c is not None:
                self._c.send_errors += 1
            self.send_errors += 1
            log.warning("RTP cannot reach %s:%d: %s", self._remote[0], self._remote[1], exc)
            return
        self._set_connected(True)

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        if self._c is not None:
            self._c.connected = int(connected)

    def _lock(self) -> None:
        """The latch locked: connect to the learned source, after which the C or Python tick runs as it
        does without symmetric RTP (the kernel drops other sources' datagrams)."""
        assert self._sock is not None and self._latch is not None
        target = self._latch.target
        assert target is not None
        self._set_learning(False)
        log.info("RTP %s: peer learned: %s:%d (%s)", self._local, *target, self._latch.learned_by)
        try:
            self._sock.connect(target)
        except OSError as exc:
            if self._c is not None:
                self._c.send_errors += 1
            self.send_errors += 1
            log.warning("RTP cannot reach %s:%d: %s", target[0], target[1], exc)
            return
        self._set_connected(True)

    def stats(self) -> RtpStats:
        c = self._c
        if c is not None:  # the native path counts in its C struct
            sent, received = SenderStats(c.packets_sent, c.octets_sent), native_rtp.receiver_stats(c)
            counts: Any = c
            timed_out = bool(c.timed_out)
        else:
            assert self.playout is not None
            sent, received, counts, timed_out = self.sender.stats, self.playout.stats(), self, self._timed_out
        return RtpStats(
            local_addr=self._local,
            remote_addr=self._remote,
            payload_type=self.payload_type,
            codec=PT_NAMES[self.payload_type],
            sent=sent,
            received=received,
            strangers=counts.strangers,
            malformed=counts.malformed,
            send_errors=counts.send_errors,
            icmp_errors=counts.icmp_errors,
            media_timeout=timed_out,
            latch=None if self._latch is None else self._latch.stats().as_dict(),
        )

    # --- the native path ------------------------------------------------------------------------------
    def _start_native(self) -> None:
        """Move this stream's sender and playout state into a C struct (t38.native_rtp) and bind it."""
        c, refs = native_rtp.new_stream(self.sender, self.payload_type, self._playout_ms)
        c.fd = self._fd
        c.learning = int(self._learning)
        c.g711 = self._g711
        c.media_timeout = -1.0 if self.media_timeout is None else self.media_timeout
        c.last_rx = self._last_rx
        self._c = c
        self._c_one = ffi.new("vfax_rtp_t *[1]", [c])
        self._c_flags = ffi.new("int[1]")
        self._c_refs = refs
        self._bind_native_session()

    def _bind_native_session(self) -> None:
        handle = self._session.native_audio()  # type: ignore[attr-defined]
        if handle is None:
            self._c.fax = self._c.cell = ffi.NULL
            self._c.was_live = 0
            self._c_session_refs = ()
        else:
            state, cell = handle
            self._c.fax, self._c.cell = state, cell
            self._c.was_live = 1
            self._c_session_refs = (state, cell)

    def _attend(self, now: float) -> None:
        """A native tick flagged this stream: do the Python side of what it saw."""
        c = self._c
        flags = c.attention
        if flags & native_rtp.ATT_SEND_ERROR:
            log.info("RTP send to %s failed: %s", self._remote, os.strerror(c.last_errno))
        if flags & native_rtp.ATT_SOCKET_ERROR:
            log.debug("RTP socket error: %s", os.strerror(c.last_errno))
        if flags & native_rtp.ATT_MALFORMED:
            reason = native_rtp.BAD_REASONS.get(c.malformed_reason, "malformed")
            log.info("RTP from %s dropped: %s", self._remote, reason)
        if flags & native_rtp.ATT_LEARNING:
            self._learn_tick(now)
        if flags & native_rtp.ATT_TIMEOUT:
            self._timed_out = True
            self._report(f"media timeout: no RTP from the peer for {self.media_timeout:g} s")
        if not self._done_reported and self._session.result is not None:
            self._done_reported = True
            if self.on_session_done is not None:
                self.on_session_done(self._session)

    def _native_failed(self, exc: Exception) -> None:
        self._report(f"media error: {exc!r}")
        self.close()

    # --- learning the peer (symmetric RTP) --------------------------------------------------------------
    def _learn_tick(self, now: float) -> None:
        """The native tick built this tick's packet but the socket is unconnected: send it where the
        latch says and read the socket through the latch."""
        c = self._c
        target = self.target
        if target is not None and self._sock is not None:
            try:
                self._sock.sendto(ffi.buffer(c.tx_packet), target)
            except OSError as exc:
                c.last_errno = exc.errno or 0
                c.send_errors += 1
        self._drain_learning(now, MAX_DATAGRAMS_PER_TICK)

    def _drain_learning(self, now: float, limit: int) -> None:
        """Read (at most ``limit``) datagrams with their sources; those the latch accepts are filed. When it
        locks, the socket is connected and what is still queued is read through the latch too."""
        sock, latch, c = self._sock, self._latch, self._c
        assert sock is not None and latch is not None
        if c is not None:
            buf, view = c.rx_buf, ffi.buffer(c.rx_buf)
        else:
            buf, view = None, self._rx_view
        got = False
        while limit > 0:
            limit -= 1
            try:
                n, source = sock.recvfrom_into(view)
            except BlockingIOError:
                break
            except OSError as exc:  # an ICMP error for an earlier datagram
                if c is not None:
                    c.icmp_errors += 1
                else:
                    self.icmp_errors += 1
                log.debug("RTP socket error: %s", exc)
                continue
            data = view[:n]
            verdict = latch.check(source, rtp_sequence(data))
            if not verdict.accepted:
                if verdict is Verdict.FOREIGN and latch.dropped_locked == 1:
                    log.info("RTP from %s dropped: locked to %s", source, latch.target)
                continue
            if verdict is Verdict.LOCKED:
                self._lock()
                limit = max(limit, 1024)  # what others queued before connect() must not stay behind
            if c is not None:
                if native_rtp.native().vfax_rtp_push_datagram(c, buf, n, now) < 0:
                    c.malformed += 1
                    continue
            else:
                assert self.playout is not None
                try:
                    self.playout.push_datagram(data, now)
                except RtpError as exc:
                    self.malformed += 1
                    if self.malformed == 1:
                        log.info("RTP from %s dropped: %s", source, exc)
                    continue
            got = True
        if got:
            self._last_rx = now
            if c is not None:
                c.last_rx = now

    # --- receiving ------------------------------------------------------------------------------------
    def _drain(self, now: float, limit: int = MAX_DATAGRAMS_PER_TICK) -> None:
        """File what the socket holds (at most ``limit`` datagrams) into the playout buffer, arrival time
        ``now`` (this tick); before the peer is known every datagram is a stranger's and is dropped."""
        if self._learning:
            self._drain_learning(now, limit)
            return
        if self._c is not None:
            native_rtp.native().vfax_rtp_drain(self._c, now, limit)
            return
        fd, buf, view, playout = self._fd, self._rx_buf, self._rx_view, self.playout
        assert playout is not None
        connected = self._connected
        got = False
        for _ in range(limit):
            n = _recv_into(fd, buf, RECV_SIZE)
            if n < 0:
                if n == _EMPTY:
                    break
                self.icmp_errors += 1  # an ICMP error for an earlier datagram (the peer re-binds)
                log.debug("RTP socket error: %s", os.strerror(-n))
                continue
            if not connected:  # the peer is not known yet
                self.strangers += 1
                continue
            try:
                playout.push_datagram(view[:n], now)
            except RtpError as exc:
                self.malformed += 1
                if self.malformed == 1:
                    log.info("RTP from %s dropped: %s", self._remote, exc)
                continue
            got = True
        if got:
            self._last_rx = now

    # --- MediaClient ----------------------------------------------------------------------------------
    def on_media_tick(self, now: float) -> None:
        """Send one packet, read the socket, play one frame, watch the peer's silence."""
        if self._closed:
            return
        if self._c is not None:  # driven by hand (tests): the same C tick, for this stream alone
            if native_rtp.native().vfax_rtp_tick(self._c_one, 1, now, self._c_flags):
                self._attend(now)
            return
        session = self._session
        g711 = self._g711
        pcm = session.audio_tx(FRAME_SAMPLES)
        if self._connected:
            _g711_encode(g711, self._tx_payload, pcm, FRAME_SAMPLES)
            self.sender.write_header(self._tx_packet)
            err = _send(self._fd, self._tx_c, _PACKET_SIZE)
            if err:  # a full socket buffer or an unreachable peer: RTP loses the packet
                self.send_errors += 1
                if self.send_errors == 1:
                    log.info("RTP send to %s failed: %s", self._remote, os.strerror(err))
        elif self._learning:
            _g711_encode(g711, self._tx_payload, pcm, FRAME_SAMPLES)
            self.sender.write_header(self._tx_packet)
            try:
                self._sock.sendto(self._tx_packet, self.target)  # type: ignore[union-attr, arg-type]
            except OSError:
                self.send_errors += 1
        self._drain(now)
        frame = self.playout.pop(now)  # type: ignore[union-attr]  # the Python tick has one
        if frame.__class__ is bytes:
            _g711_decode(g711, self._rx_pcm, frame, FRAME_SAMPLES)
            session.audio_rx(self._rx_pcm, FRAME_SAMPLES)
        elif frame is MISSING:
            session.audio_missing(FRAME_SAMPLES)
        else:
            for count, data in frame.runs:  # type: ignore[union-attr]
                if data is None:
                    session.audio_missing(count)
                else:
                    _g711_decode(g711, self._rx_pcm, data, count)
                    session.audio_rx(self._rx_pcm, count)
        if (
            self.media_timeout is not None
            and not self._timed_out
            and now - self._last_rx > self.media_timeout
        ):
            self._timed_out = True
            self._report(f"media timeout: no RTP from the peer for {self.media_timeout:g} s")
        if not self._done_reported and session.result is not None:
            self._done_reported = True
            if self.on_session_done is not None:
                self.on_session_done(session)

    def on_media_error(self, exc: Exception) -> None:
        self._report(f"media error: {exc!r}")
        self.close()

    def _report(self, reason: str) -> None:
        log.warning("RTP %s: %s", self._local, reason)
        if self.on_media_timeout is not None:
            try:
                self.on_media_timeout(reason)
            except Exception:  # the call layer's bug must not stop the clock for every other call
                log.exception("on_media_timeout callback failed")

    def __repr__(self) -> str:
        return f"<RtpEndpoint {self._local} -> {self._remote} {PT_NAMES[self.payload_type]}>"
