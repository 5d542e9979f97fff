"""Two fax sessions back to back in virtual time, through a seeded network model.

Time is a sample clock: each step is 20 ms of line time (160 samples), and nothing waits, so a
whole fax runs hundreds of times faster than real time (spandsp's own fax_tests.c and
t38_terminal_tests.c work the same way). Between the two sessions sits a ``VirtualLink`` per
direction; its ``Impairment`` decides, per packet and from its own seeded generator, whether the
packet is lost, duplicated or delayed. Audio goes through G.711 companding and a fixed-delay
playout buffer that reports missing 20 ms frames to the modems (``fax_rx_fillin``); T.38 goes
through a ``T38Wire`` (raw IFP with sequence numbers, or UDPTL with error recovery).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from t38.engine import FRAME_SAMPLES, SAMPLE_RATE, FaxEvent, FaxResult, FaxSession, Media
from t38.spandsp import G711Codec, ffi
from t38.udptl import Delivered, Gap, Udptl, UdptlConfig, UdptlError

FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE


class Planner(Protocol):
    """Decides the fate of one packet sent at ``now``: its delivery times (none = lost)."""

    def plan(self, now: float) -> list[float]: ...


class VirtualLink:
    """One direction of the virtual network: a priority queue of packets by delivery time."""

    def __init__(self, impairment: Planner | None = None) -> None:
        self.impairment = impairment
        self._queue: list[tuple[float, int, Any]] = []
        self._order = itertools.count()
        self.sent = 0
        self.delivered = 0
        self.dropped = 0

    def send(self, now: float, item: Any) -> None:
        self.sent += 1
        times = [now] if self.impairment is None else self.impairment.plan(now)
        if not times:
            self.dropped += 1
        for t in times:
            heapq.heappush(self._queue, (t, next(self._order), item))

    def receive(self, now: float) -> Iterable[Any]:
        q = self._queue
        while q and q[0][0] <= now + 1e-9:
            self.delivered += 1
            yield heapq.heappop(q)[2]


class T38Wire(Protocol):
    """How IFP packets travel: one side's encoder and the other side's decoder."""

    def encode(self, ifp: bytes, now: float) -> list[Any]: ...
    def resends(self, now: float) -> list[Any]: ...
    def decode(self, datagram: Any, now: float) -> list[tuple[int, bytes]]: ...
    def poll(self, now: float) -> list[tuple[int, bytes]]: ...


@dataclass
class RawIfpWire:
    """T.38 with no transport framing: each IFP travels alone with its sequence number."""

    seq: int = 0

    def encode(self, ifp: bytes, now: float) -> list[Any]:
        item = (self.seq, ifp)
        self.seq = (self.seq + 1) & 0xFFFF
        return [item]

    def resends(self, now: float) -> list[Any]:
        return []

    def decode(self, datagram: Any, now: float) -> list[tuple[int, bytes]]:
        return [datagram]

    def poll(self, now: float) -> list[tuple[int, bytes]]:
        return []


class UdptlWire:
    """T.38 over UDPTL (T.38 §9.1): the real codec, with redundancy or FEC, in virtual time.

    One instance per endpoint: its sender encodes what the endpoint sends, its receiver decodes what
    reaches the endpoint, and both share the endpoint's counters, as on a real call."""

    def __init__(self, config: UdptlConfig) -> None:
        self.udptl = Udptl(config)

    def encode(self, ifp: bytes, now: float) -> list[Any]:
        return [self.udptl.send(ifp, now)]

    def resends(self, now: float) -> list[Any]:
        return self.udptl.resends_due(now)

    def decode(self, datagram: Any, now: float) -> list[tuple[int, bytes]]:
        try:
            return self._ifps(self.udptl.receive(datagram, now))
        except UdptlError:
            return []  # counted as malformed by the receiver; nothing else happens

    def poll(self, now: float) -> list[tuple[int, bytes]]:
        return self._ifps(self.udptl.poll(now))

    @staticmethod
    def _ifps(items: list[Delivered | Gap]) -> list[tuple[int, bytes]]:
        # A Gap needs no action: spandsp sees the jump in sequence numbers and handles the loss.
        return [(d.seq, d.ifp) for d in items if isinstance(d, Delivered)]


def udptl_wires(
    calling: UdptlConfig, answering: UdptlConfig
) -> tuple[UdptlWire, UdptlWire, UdptlWire, UdptlWire]:
    """The ``wires`` argument of run_back_to_back for two UDPTL endpoints."""
    a, b = UdptlWire(calling), UdptlWire(answering)
    return (a, b, b, a)


@dataclass
class _AudioPath:
    """Sender side G.711 encoding, receiver side playout buffer and decoding, for one direction."""

    link: VirtualLink
    ulaw: bool
    playout_frames: int
    codec: G711Codec = field(init=False)
    out_bytes: Any = field(init=False)
    in_pcm: Any = field(init=False)
    buffer: dict[int, bytes] = field(default_factory=dict)
    next_play: int = 0
    late: int = 0
    duplicates: int = 0
    missing: int = 0

    def __post_init__(self) -> None:
        self.codec = G711Codec(self.ulaw)
        self.out_bytes = ffi.new("uint8_t[]", FRAME_SAMPLES)
        self.in_pcm = ffi.new("int16_t[]", FRAME_SAMPLES)
        self._out_view = ffi.buffer(self.out_bytes)

    def send(self, now: float, index: int, pcm: Any) -> None:
        self.codec.encode(pcm, FRAME_SAMPLES, self.out_bytes)
        self.link.send(now, (index, self._out_view[:]))

    def play(self, now: float, step: int, session: FaxSession) -> None:
        for index, payload in self.link.receive(now):
            if index < self.next_play:
                self.late += 1
            elif index in self.buffer:
                self.duplicates += 1
            else:
                self.buffer[index] = payload
        play = step - self.playout_frames
        if play < 0:
            session.audio_missing(FRAME_SAMPLES)  # nothing can have arrived yet: line silence
            return
        self.next_play = play + 1
        payload = self.buffer.pop(play, None)
        if payload is None:
            self.missing += 1
            session.audio_missing(FRAME_SAMPLES)
        else:
            self.codec.decode(payload, FRAME_SAMPLES, self.in_pcm)
            session.audio_rx(self.in_pcm, FRAME_SAMPLES)


@dataclass
class BackToBackResult:
    calling: FaxResult
    answering: FaxResult
    line_seconds: float
    steps: int
    link_stats: dict[str, dict[str, int]]


EventSink = Callable[[FaxSession, FaxEvent], None]


def run_back_to_back(
    calling: FaxSession,
    answering: FaxSession,
    *,
    forward: VirtualLink | None = None,
    backward: VirtualLink | None = None,
    wires: tuple[T38Wire, T38Wire, T38Wire, T38Wire] | None = None,
    ulaw: bool = True,
    playout_ms: int = 60,
    max_seconds: float = 900.0,
    on_event: EventSink | None = None,
) -> BackToBackResult:
    """Run both sessions until both reached phase E (or ``max_seconds`` of line time).

    ``wires`` is (calling encoder, answering decoder, answering encoder, calling decoder) for T.38;
    by default each IFP travels raw with its sequence number.
    """
    if calling.media is not answering.media:
        raise ValueError("both sessions must start on the same media")
    forward = forward or VirtualLink()
    backward = backward or VirtualLink()
    max_steps = int(max_seconds / FRAME_SECONDS)
    sessions = (calling, answering)
    step = 0
    if calling.media is Media.AUDIO:
        frames = max(1, playout_ms // 20)
        a_to_b = _AudioPath(forward, ulaw, frames)
        b_to_a = _AudioPath(backward, ulaw, frames)
        while step < max_steps and not (calling.done and answering.done):
            now = step * FRAME_SECONDS
            a_to_b.send(now, step, calling.audio_tx())
            b_to_a.send(now, step, answering.audio_tx())
            a_to_b.play(now, step, answering)
            b_to_a.play(now, step, calling)
            step += 1
            _dispatch(sessions, on_event)
        stats = {
            "forward": _audio_stats(forward, a_to_b),
            "backward": _audio_stats(backward, b_to_a),
        }
    else:
        w = wires or (RawIfpWire(), RawIfpWire(), RawIfpWire(), RawIfpWire())
        # Bound methods once: this loop runs 50 times per second of line time, twice.
        paths = [
            (
                src.advance,
                src.take_t38_tx,
                enc.encode,
                enc.resends,
                link.send,
                link.receive,
                dec.decode,
                dec.poll,
                dst.t38_rx,
            )
            for src, enc, link, dec, dst in (
                (calling, w[0], forward, w[1], answering),
                (answering, w[2], backward, w[3], calling),
            )
        ]
        while step < max_steps and (calling.result is None or answering.result is None):
            now = step * FRAME_SECONDS
            for advance, take, encode, resends, send, receive, decode, poll, deliver in paths:
                advance(FRAME_SAMPLES)
                for ifp in take():
                    for datagram in encode(ifp, now):
                        send(now, datagram)
                for datagram in resends(now):
                    send(now, datagram)
                for datagram in receive(now):
                    for seq, ifp in decode(datagram, now):
                        deliver(ifp, seq)
                for seq, ifp in poll(now):
                    deliver(ifp, seq)
            step += 1
            if calling.events or answering.events:
                _dispatch(sessions, on_event)
        stats = {"forward": _link_stats(forward), "backward": _link_stats(backward)}
        for side, wire in (("calling", w[0]), ("answering", w[2])):
            if isinstance(wire, UdptlWire):
                stats[f"udptl_{side}"] = asdict(wire.udptl.stats)
    for s in sessions:
        if not s.done:
            s.close()  # out of line time: phase E with the real state, reported as failed
    _dispatch(sessions, on_event)
    assert calling.result is not None and answering.result is not None
    return BackToBackResult(calling.result, answering.result, step * FRAME_SECONDS, step, stats)


def _dispatch(sessions: tuple[FaxSession, FaxSession], on_event: EventSink | None) -> None:
    for s in sessions:
        if s.events:
            events = s.take_events()
            if on_event is not None:
                for e in events:
                    on_event(s, e)


def _link_stats(link: VirtualLink) -> dict[str, int]:
    return {"sent": link.sent, "delivered": link.delivered, "dropped": link.dropped}


def _audio_stats(link: VirtualLink, path: _AudioPath) -> dict[str, int]:
    return _link_stats(link) | {"late": path.late, "duplicates": path.duplicates, "missing": path.missing}
