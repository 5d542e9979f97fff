"""RTP (RFC 3550) for G.711 fax passthrough: the packet codec, the sending stream, the playout buffer.

Sans-I/O: bytes and times go in, bytes and frames come out; no sockets, no clocks. The asyncio edge is
:mod:`t38.audio_transport`.

Fax modems over G.711 tolerate a constant delay but not a gap, and a gap filled with zeros looks to a
V.17 receiver like a line drop. So the receiving side is a fixed-delay playout buffer that places every
packet by its RTP timestamp, reorders, drops duplicates and late packets, and reports the samples that
never arrived as *missing* (the edge passes that to spandsp's ``fax_rx_fillin``, which keeps the modems'
timing), never as zeros. No VAD, no comfort noise, no packet loss concealment: any of them would corrupt
the modem signal (ITU-T V.152 §6 asks the same of a voice-band-data channel).
"""

from __future__ import annotations

import enum
import random
import struct
from dataclasses import asdict, dataclass
from typing import Any, Final

__all__ = [
    "FRAME_SAMPLES",
    "MISSING",
    "PT_PCMA",
    "PT_PCMU",
    "SAMPLE_RATE",
    "Missing",
    "PartialFrame",
    "PlayoutBuffer",
    "PushResult",
    "ReceiverStats",
    "RtpError",
    "RtpExtension",
    "RtpPacket",
    "RtpSender",
    "SenderStats",
]

RTP_VERSION: Final = 2
PT_PCMU: Final = 0  # RFC 3551 §4.5.14, Table 4
PT_PCMA: Final = 8
PT_NAMES: Final = {PT_PCMU: "PCMU", PT_PCMA: "PCMA"}
SAMPLE_RATE: Final = 8000  # RFC 3551 Table 4: both G.711 laws use an 8000 Hz RTP clock
FRAME_SAMPLES: Final = 160  # 20 ms, RFC 3551 §4.5 default packetisation for G.711
HEADER_SIZE: Final = 12
SEQ_MOD: Final = 1 << 16
TS_MOD: Final = 1 << 32
MAX_DROPOUT: Final = 3000  # RFC 3550 Appendix A.1: a larger forward jump is a restart of the sequence
MAX_MISORDER: Final = 100  # RFC 3550 Appendix A.1: a larger backward jump too
DUPLICATE_WINDOW: Final = 64  # sequence numbers remembered to tell a duplicate from a late packet
STALE_SWITCH_BACK: Final = 10  # packets in a row from the SSRC we left that make us go back to it

_HEADER: Final = struct.Struct("!BBHII")
_EXT_HEADER: Final = struct.Struct("!HH")
_FAST_FIRST_OCTET: Final = RTP_VERSION << 6  # V=2, P=0, X=0, CC=0: what every G.711 peer sends
_WINDOW_MASK: Final = (1 << DUPLICATE_WINDOW) - 1


class RtpError(ValueError):
    """A datagram from the peer that is not a well-formed RTP packet (RFC 3550 §5.1). Count and drop."""


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """The RFC 3550 §5.3.1 header extension: carried, never interpreted (no profile of ours uses one)."""

    profile: int
    data: bytes = b""  # a whole number of 32-bit words


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 §5.1). ``padding`` is the number of padding octets, count octet included."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        """Decode one datagram; anything malformed raises :class:`RtpError` naming the field."""
        size = len(data)
        if size < HEADER_SIZE:
            raise RtpError(f"header: {size} octets, RTP needs at least {HEADER_SIZE} (RFC 3550 §5.1)")
        first, second, seq, ts, ssrc = _HEADER.unpack_from(data)
        if first == _FAST_FIRST_OCTET:  # the common case: no padding, extension or CSRC list
            return cls(second & 0x7F, seq, ts, ssrc, bytes(data[HEADER_SIZE:]), bool(second & 0x80))
        version = first >> 6
        if version != RTP_VERSION:
            raise RtpError(f"version: {version}, RTP is version {RTP_VERSION} (RFC 3550 §5.1)")
        offset = HEADER_SIZE
        cc = first & 0x0F
        csrc: tuple[int, ...] = ()
        if cc:
            if size < offset + 4 * cc:
                raise RtpError(f"CSRC count: {cc} identifiers announced, {size - offset} octets left")
            csrc = struct.unpack_from(f"!{cc}I", data, offset)
            offset += 4 * cc
        extension = None
        if first & 0x10:
            if size < offset + 4:
                raise RtpError("extension: header extension flag set but no extension header (§5.3.1)")
            profile, words = _EXT_HEADER.unpack_from(data, offset)
            offset += 4
            if size < offset + 4 * words:
                raise RtpError(f"extension length: {words} words announced, {size - offset} octets left")
            extension = RtpExtension(profile, bytes(data[offset : offset + 4 * words]))
            offset += 4 * words
        end = size
        padding = 0
        if first & 0x20:
            padding = data[size - 1]
            if padding == 0 or padding > size - offset:
                raise RtpError(f"padding: count octet says {padding}, {size - offset} octets after header")
            end -= padding
        return cls(
            second & 0x7F,
            seq,
            ts,
            ssrc,
            bytes(data[offset:end]),
            bool(second & 0x80),
            csrc,
            extension,
            padding,
        )

    def __bytes__(self) -> bytes:
        if not 0 <= self.payload_type < 128:
            raise ValueError(f"payload_type {self.payload_type} does not fit 7 bits")
        if not 0 <= self.sequence_number < SEQ_MOD:
            raise ValueError(f"sequence_number {self.sequence_number} does not fit 16 bits")
        if not (
            0 <= self.timestamp < TS_MOD
            and 0 <= self.ssrc < TS_MOD
            and all(0 <= c < TS_MOD for c in self.csrc)
        ):
            raise ValueError("timestamp, SSRC and CSRC identifiers are 32-bit unsigned")
        if self.extension is not None and not 0 <= self.extension.profile < SEQ_MOD:
            raise ValueError("extension profile does not fit 16 bits")
        if len(self.csrc) > 15:
            raise ValueError("at most 15 CSRC identifiers (RFC 3550 §5.1, CC is 4 bits)")
        if not 0 <= self.padding < 256:
            raise ValueError("padding must be 0..255 octets")
        first = RTP_VERSION << 6 | (0x20 if self.padding else 0) | len(self.csrc)
        if self.extension is not None:
            first |= 0x10
        out = bytearray(
            _HEADER.pack(
                first,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence_number,
                self.timestamp,
                self.ssrc,
            )
        )
        for c in self.csrc:
            out += c.to_bytes(4, "big")
        if self.extension is not None:
            ext = self.extension.data
            if len(ext) % 4:
                raise ValueError("extension data must be a whole number of 32-bit words (§5.3.1)")
            out += _EXT_HEADER.pack(self.extension.profile, len(ext) // 4) + ext
        out += self.payload
        if self.padding:
            out += bytes(self.padding - 1) + bytes((self.padding,))
        return bytes(out)


# --- sending --------------------------------------------------------------------------------------
@dataclass(slots=True)
class SenderStats:
    """What an RTCP sender report would carry (RFC 3550 §6.4.1): packets and payload octets sent."""

    packets_sent: int = 0
    octets_sent: int = 0


class RtpSender:
    """The state of one outgoing stream.

    Initial sequence number, timestamp and SSRC are random (RFC 3550 §5.1, §8); the timestamp advances
    by the samples each packet carries; the first packet has the marker bit (RFC 3551 §4.1: the start
    of a talkspurt, and a fax stream is one talkspurt). The SSRC survives a re-INVITE that changes the
    payload type, so the peer sees one continuous stream.
    """

    __slots__ = (
        "_marker",
        "octets_sent",
        "packets_sent",
        "payload_type",
        "sequence_number",
        "ssrc",
        "timestamp",
    )

    def __init__(
        self,
        payload_type: int = PT_PCMU,
        *,
        ssrc: int | None = None,
        sequence_number: int | None = None,
        timestamp: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 <= payload_type < 128:
            raise ValueError(f"payload_type {payload_type} does not fit 7 bits")
        r = rng or random.SystemRandom()
        self.payload_type = payload_type
        self.ssrc = r.getrandbits(32) if ssrc is None else ssrc & 0xFFFFFFFF
        self.sequence_number = r.getrandbits(16) if sequence_number is None else sequence_number & 0xFFFF
        self.timestamp = r.getrandbits(32) if timestamp is None else timestamp & 0xFFFFFFFF
        self.packets_sent = 0
        self.octets_sent = 0
        self._marker = 0x80

    @property
    def stats(self) -> SenderStats:
        return SenderStats(self.packets_sent, self.octets_sent)

    def packet(self, payload: bytes, samples: int | None = None) -> RtpPacket:
        """The next packet carrying ``payload`` (G.711: one octet per sample unless told otherwise)."""
        p = RtpPacket(
            self.payload_type,
            self.sequence_number,
            self.timestamp,
            self.ssrc,
            bytes(payload),
            bool(self._marker),
        )
        self._marker = 0
        self.sequence_number = (self.sequence_number + 1) & 0xFFFF
        self.timestamp = (self.timestamp + (len(payload) if samples is None else samples)) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return p

    def write_header(
        self, buf: bytearray | memoryview, payload_octets: int = FRAME_SAMPLES, samples: int = FRAME_SAMPLES
    ) -> None:
        """Hot path: write the next 12-octet header into ``buf[0:12]`` (the payload follows in place)."""
        seq = self.sequence_number
        ts = self.timestamp
        _HEADER.pack_into(buf, 0, _FAST_FIRST_OCTET, self._marker | self.payload_type, seq, ts, self.ssrc)
        self._marker = 0
        self.sequence_number = (seq + 1) & 0xFFFF
        self.timestamp = (ts + samples) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += payload_octets


# --- receiving ------------------------------------------------------------------------------------
class Missing:
    """The type of :data:`MISSING`: a whole 20 ms frame that has no samples to play."""

    __slots__ = ()
    _instance: Missing | None = None

    def __new__(cls) -> Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = Missing()


@dataclass(frozen=True, slots=True)
class PartialFrame:
    """A frame of which only some samples arrived (peers with 10 or 30 ms packets, a trimmed late packet).

    ``runs`` are in play order: ``(count, g711_octets)`` for samples that arrived, ``(count, None)`` for
    samples to report missing. The counts add up to the frame size.
    """

    runs: tuple[tuple[int, bytes | None], ...]

    @property
    def missing_samples(self) -> int:
        return sum(n for n, data in self.runs if data is None)


Frame = bytes | Missing | PartialFrame


class PushResult(enum.IntEnum):
    """What the playout buffer did with one packet."""

    ACCEPTED = 0
    DUPLICATE = 1  # the same sequence number was seen already (RFC 3550 §A.1 allows duplicates)
    LATE = 2  # its samples were already due: too late to play, dropped
    IGNORED_PT = 3  # not the negotiated G.711 payload type: RFC 4733 events, comfort noise, RTCP on mux
    STALE_SSRC = 4  # from the SSRC we left behind after a change (reordered across the switch)
    OVERSIZE = 5  # longer than the whole buffer can hold


@dataclass(frozen=True, slots=True)
class ReceiverStats:
    """Receive counters of one endpoint for the call report (RFC 3550 §6.4.1 where the RFC defines them)."""

    packets_received: int
    octets_received: int
    lost: int  # cumulative number of packets lost (RFC 3550 §6.4.1, §A.3), summed over SSRCs
    late: int
    duplicates: int
    reordered: int
    ignored_pt: int
    ssrc_changes: int
    stale_ssrc: int
    oversize: int  # packets longer than the whole buffer, dropped
    resyncs: int  # the stream was re-anchored: timestamp or sequence jump, clock drift, persistent lateness
    jitter: float  # interarrival jitter in timestamp units (RFC 3550 §6.4.1), of the current SSRC
    jitter_ms: float
    max_late_ms: float  # how late the latest late packet was: the playout delay to add to save it
    max_depth_ms: float  # deepest the buffer got (samples ahead of the play point)
    frames_played: int  # whole frames of received audio handed to the modems
    frames_partial: int
    frames_missing: int  # frames with no audio at all, after the stream started
    frames_idle: int  # frames played before the first packet was due (call setup)
    samples_missing: int  # samples reported to the modems as missing (spandsp fax_rx_fillin)
    ssrc: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(
        cls, counters: Any, *, lost: int, jitter: float, max_late: float, max_depth: int, ssrc: int | None
    ) -> ReceiverStats:
        """From anything that has the plain counters as attributes under these names (the Python
        playout buffer, the native stream's C struct); the derived figures are passed in."""
        return cls(
            **{name: getattr(counters, name) for name in _PLAIN_COUNTERS},
            lost=lost,
            jitter=jitter,
            jitter_ms=jitter * 1000 / SAMPLE_RATE,
            max_late_ms=max_late * 1000,
            max_depth_ms=max_depth * 1000 / SAMPLE_RATE,
            ssrc=ssrc,
        )


_PLAIN_COUNTERS: Final = (
    "packets_received",
    "octets_received",
    "late",
    "duplicates",
    "reordered",
    "ignored_pt",
    "ssrc_changes",
    "stale_ssrc",
    "oversize",
    "resyncs",
    "frames_played",
    "frames_partial",
    "frames_missing",
    "frames_idle",
    "samples_missing",
)


class PlayoutBuffer:
    """Fixed-delay playout of one G.711 direction: ``push(packet, arrival)`` and ``pop(play_time)``.

    Time here is a playout position in samples that advances by one frame per ``pop``, whoever calls
    it (a real 20 ms clock or a virtual one). A stream is anchored on its first packet: that packet is
    due ``delay`` after the next frame to play, and every later packet is placed by its RTP timestamp
    (RFC 3550 §5.1), so reordering costs nothing and a peer sending 10 or 30 ms packets is reframed
    into 20 ms frames. Sequence numbers (extended over wrap as in RFC 3550 §A.1) tell duplicates and
    reordering apart and count losses.

    A new SSRC (re-INVITE, peer restart) is a new stream, anchored the same way; what the old stream
    still had buffered plays out first. A timestamp or sequence jump, or packets late again and again
    (a peer clock slower than ours), re-anchors the stream ("resync"); constant delay is what modems
    want, so nothing adapts more than that.

    The samples sit in a ring of G.711 octets with a presence mask beside it, both bytearrays: a push
    and a pop are a few slice operations at C speed, and the common 160-octet frame is one copy.

    Any clock drives it: the real-time edge calls ``pop(tick_deadline)`` once per media tick; a
    virtual-time line calls ``push_datagram(datagram, now)`` for each packet delivered by ``now`` and
    then ``pop(now)`` once per 20 ms step. A frame that comes back :data:`MISSING` (or the ``None`` runs
    of a :class:`PartialFrame`) goes to the modems as ``audio_missing``, never as zeros.
    """

    __slots__ = (
        "_base_ext_seq",
        "_capacity",
        "_cursor",
        "_first_pos",
        "_jitter",
        "_last_ext_ts",
        "_last_ts",
        "_late_streak",
        "_lost_before",
        "_mask",
        "_max_ext_seq",
        "_offset",
        "_ones_frame",
        "_prev_ssrc",
        "_received",
        "_ring",
        "_ssrc",
        "_stale_streak",
        "_transit",
        "_window",
        "_zeros_frame",
        "delay",
        "duplicates",
        "frame",
        "frames_idle",
        "frames_missing",
        "frames_partial",
        "frames_played",
        "ignored_pt",
        "last_play_time",
        "late",
        "late_resync",
        "max_depth",
        "max_late",
        "octets_received",
        "oversize",
        "packets_received",
        "payload_type",
        "reordered",
        "resyncs",
        "samples_missing",
        "ssrc_changes",
        "stale_ssrc",
    )

    def __init__(
        self,
        payload_type: int = PT_PCMU,
        *,
        delay_ms: int = 60,
        window_ms: int = 1000,
        late_resync: int = 5,
        frame_samples: int = FRAME_SAMPLES,
    ) -> None:
        """``delay_ms`` is rounded to whole frames; ``window_ms`` is how far ahead of its due time a
        packet may arrive before it counts as a timestamp jump; ``late_resync`` late packets in a row
        re-anchor the stream."""
        if delay_ms < 0 or window_ms < 0 or frame_samples <= 0 or late_resync < 1:
            raise ValueError("delay_ms and window_ms must be >= 0, frame_samples and late_resync >= 1")
        self.payload_type = payload_type
        self.frame = frame_samples
        self.delay, self._capacity = self.geometry(delay_ms, window_ms, frame_samples)
        self._ring = bytearray(self._capacity)
        self._ones_frame = b"\x01" * frame_samples
        self._zeros_frame = bytes(frame_samples)
        self._mask = bytearray(self._capacity)
        self.late_resync = late_resync
        self._cursor = 0  # playout position (samples) of the next frame ``pop`` returns
        self._first_pos: int | None = None
        self._ssrc: int | None = None
        self._prev_ssrc: int | None = None
        self._offset = 0  # playout position = extended RTP timestamp + offset
        self._max_ext_seq = 0
        self._base_ext_seq = 0
        self._window = 0
        self._last_ts = 0
        self._last_ext_ts = 0
        self._received = 0
        self._lost_before = 0
        self._transit = 0.0
        self._jitter = 0.0
        self._late_streak = 0
        self._stale_streak = 0
        self.last_play_time: float | None = None
        self.packets_received = 0
        self.octets_received = 0
        self.late = 0
        self.duplicates = 0
        self.reordered = 0
        self.ignored_pt = 0
        self.ssrc_changes = 0
        self.stale_ssrc = 0
        self.resyncs = 0
        self.oversize = 0
        self.max_depth = 0
        self.max_late = 0.0
        self.frames_played = 0
        self.frames_partial = 0
        self.frames_missing = 0
        self.frames_idle = 0
        self.samples_missing = 0

    @staticmethod
    def geometry(
        delay_ms: int = 60, window_ms: int = 1000, frame_samples: int = FRAME_SAMPLES
    ) -> tuple[int, int]:
        """(delay, ring capacity) in samples: the delay in whole frames, room for the window and two
        frames beside it (the native path sizes its ring the same way)."""
        delay = round(delay_ms * SAMPLE_RATE / 1000 / frame_samples) * frame_samples
        window = -(-(window_ms * SAMPLE_RATE // 1000) // frame_samples) * frame_samples
        return delay, delay + window + 2 * frame_samples

    # --- input ------------------------------------------------------------------------------------
    def push(self, packet: RtpPacket, arrival_time: float) -> PushResult:
        """File one received packet; ``arrival_time`` in seconds on any monotonic clock."""
        return self._push(
            packet.payload_type,
            packet.sequence_number,
            packet.timestamp,
            packet.ssrc,
            packet.payload,
            arrival_time,
        )

    def push_datagram(self, data: bytes, arrival_time: float) -> PushResult:
        """Parse and file one datagram without building an :class:`RtpPacket` in the common case.

        Raises :class:`RtpError` for a malformed datagram, like :meth:`RtpPacket.parse`."""
        if len(data) >= HEADER_SIZE and data[0] == _FAST_FIRST_OCTET:
            _, second, seq, ts, ssrc = _HEADER.unpack_from(data)
            return self._push(second & 0x7F, seq, ts, ssrc, memoryview(data)[HEADER_SIZE:], arrival_time)
        return self.push(RtpPacket.parse(data), arrival_time)

    def _push(self, pt: int, seq: int, ts: int, ssrc: int, payload: Any, arrival: float) -> PushResult:
        # The hot path (every packet of every call): the next packet of the current stream, on time.
        n = len(payload)
        self.packets_received += 1
        self.octets_received += n
        if pt != self.payload_type:
            self.ignored_pt += 1
            return PushResult.IGNORED_PT
        if ssrc == self._ssrc:
            if self._stale_streak:
                self._stale_streak = 0
            # RFC 3550 §A.1: extend the 16-bit sequence number relative to the highest seen.
            d = (seq - self._max_ext_seq) & 0xFFFF
            if d == 1:
                self._max_ext_seq += 1
                self._window = ((self._window << 1) | 1) & _WINDOW_MASK
                in_order = True
            else:
                order = self._sequence_jump(d, seq, ts, ssrc, arrival)
                if order is None:
                    return PushResult.DUPLICATE
                in_order = order
        else:
            if ssrc == self._prev_ssrc and self._stale_streak < STALE_SWITCH_BACK:
                self._stale_streak += 1
                self.stale_ssrc += 1
                return PushResult.STALE_SSRC
            if self._ssrc is not None:
                self.ssrc_changes += 1
                self._prev_ssrc = self._ssrc
            self._new_stream(ssrc, seq, ts, arrival)
            in_order = True
        self._received += 1
        # Extend the 32-bit timestamp the same way, relative to the latest in-order packet.
        dt = (ts - self._last_ts) & 0xFFFFFFFF
        if dt >= 0x80000000:
            dt -= TS_MOD
        ext_ts = self._last_ext_ts + dt
        if in_order:
            self._last_ts = ts
            self._last_ext_ts = ext_ts
        # RFC 3550 §6.4.1 interarrival jitter, in timestamp units: J += (|D(i-1, i)| - J) / 16.
        transit = arrival * SAMPLE_RATE - ext_ts
        self._jitter += (abs(transit - self._transit) - self._jitter) * 0.0625
        self._transit = transit
        cursor = self._cursor
        pos = ext_ts + self._offset
        end = pos + n
        if pos < cursor or end - cursor > self._capacity or not n:
            return self._place(pos, n, ext_ts, payload, in_order, arrival)
        if self._late_streak:
            self._late_streak = 0
        cap = self._capacity
        i = pos % cap
        if i + n <= cap:
            self._ring[i : i + n] = payload
            self._mask[i : i + n] = self._ones_frame if n == self.frame else b"\x01" * n
        else:
            self._store(pos, payload, n)
        if end - cursor > self.max_depth:
            self.max_depth = end - cursor
        return PushResult.ACCEPTED

    def _sequence_jump(self, d: int, seq: int, ts: int, ssrc: int, arrival: float) -> bool | None:
        """A sequence number other than the next one: True if in order, False if reordered, None for a
        duplicate (RFC 3550 §A.1, with a 64-packet window to tell duplicates from reordering)."""
        if d >= 0x8000:
            d -= SEQ_MOD
        if d > MAX_DROPOUT or d < -MAX_MISORDER:  # the peer restarted its sequence, same SSRC
            self.resyncs += 1
            self._new_stream(ssrc, seq, ts, arrival)
            return True
        if d > 0:  # packets lost (or still on their way)
            self._max_ext_seq += d
            self._window = ((self._window << d) | 1) & _WINDOW_MASK
            return True
        if -d < DUPLICATE_WINDOW:
            bit = 1 << -d
            if self._window & bit:
                self.duplicates += 1
                return None
            self._window |= bit
        if self._max_ext_seq + d < self._base_ext_seq:
            self._base_ext_seq = self._max_ext_seq + d
        self.reordered += 1
        return False

    def _place(
        self, pos: int, n: int, ext_ts: int, payload: Any, in_order: bool, arrival: float
    ) -> PushResult:
        """A packet that is not simply on time: late, partly late, far ahead, or empty."""
        if not n:
            return PushResult.ACCEPTED
        cursor = self._cursor
        end = pos + n
        if end <= cursor:
            if in_order and cursor - end > self._capacity:
                self.resyncs += 1  # a timestamp jump backwards: the peer restarted its clock
            else:
                if self.last_play_time is not None:
                    # the frame before ``cursor`` played at last_play_time; ``pos`` was due earlier
                    late_by = arrival - self.last_play_time + (cursor - self.frame - pos) / SAMPLE_RATE
                    if late_by > self.max_late:
                        self.max_late = late_by
                self._late_streak += 1
                if self._late_streak < self.late_resync:
                    self.late += 1
                    return PushResult.LATE
                self.resyncs += 1  # late again and again: the peer's clock is slower than ours
            pos = self._anchor(ext_ts)
            end = pos + n
        self._late_streak = 0
        if end - cursor > self._capacity:
            if n > self._capacity - self.delay - self.frame:
                self.oversize += 1
                return PushResult.OVERSIZE
            self.resyncs += 1  # far ahead of its time: a timestamp jump
            pos = self._anchor(ext_ts)
            end = pos + n
        if pos < cursor:  # partly late: keep the samples still to come
            payload = payload[cursor - pos :]
            pos = cursor
            n = end - pos
        self._store(pos, payload, n)
        if end - cursor > self.max_depth:
            self.max_depth = end - cursor
        return PushResult.ACCEPTED

    def _new_stream(self, ssrc: int, seq: int, ts: int, arrival: float) -> None:
        """Start counting a new source (RFC 3550 §A.1 init_seq) and anchor it ``delay`` ahead."""
        if self._ssrc is not None:
            self._lost_before += self._lost_now()
        self._ssrc = ssrc
        self._max_ext_seq = seq
        self._base_ext_seq = seq
        self._window = 1
        self._received = 0
        self._last_ts = ts
        self._last_ext_ts = ts
        self._transit = arrival * SAMPLE_RATE - ts
        self._jitter = 0.0
        self._late_streak = 0
        self._anchor(ts)

    def _anchor(self, ext_ts: int) -> int:
        pos = self._cursor + self.delay
        self._offset = pos - ext_ts
        if self._first_pos is None:
            self._first_pos = pos
        return pos

    def _store(self, pos: int, payload: Any, n: int) -> None:
        cap = self._capacity
        i = pos % cap
        first = min(n, cap - i)
        self._ring[i : i + first] = payload[:first] if first < n else payload
        self._mask[i : i + first] = b"\x01" * first
        if first < n:
            self._ring[: n - first] = payload[first:]
            self._mask[: n - first] = b"\x01" * (n - first)

    def _lost_now(self) -> int:
        expected = self._max_ext_seq - self._base_ext_seq + 1
        return max(0, expected - self._received)

    # --- output -----------------------------------------------------------------------------------
    def pop(self, play_time: float | None = None) -> Frame:
        """The next frame to play: its G.711 octets, :data:`MISSING`, or a :class:`PartialFrame`.

        ``play_time`` is when this frame reaches the modem (any clock, the same as ``push``'s); it only
        measures how late late packets were."""
        self.last_play_time = play_time
        f = self.frame
        cap = self._capacity
        cursor = self._cursor
        self._cursor = cursor + f
        i = cursor % cap  # the ring holds whole frames and the cursor moves by frames: no wrap inside
        mask = self._mask
        j = i + f
        if mask[i] and mask.find(0, i, j) < 0:
            mask[i:j] = self._zeros_frame
            self.frames_played += 1
            return bytes(self._ring[i:j])
        if not mask[i] and mask.find(1, i, j) < 0:
            if self._first_pos is None or cursor < self._first_pos:
                self.frames_idle += 1
            else:
                self.frames_missing += 1
                self.samples_missing += f
            return MISSING
        runs: list[tuple[int, bytes | None]] = []
        k = i
        while k < j:
            present = mask[k]
            e = mask.find(0 if present else 1, k, j)
            if e < 0:
                e = j
            if present:
                runs.append((e - k, bytes(self._ring[k:e])))
            else:
                runs.append((e - k, None))
                self.samples_missing += e - k
            k = e
        mask[i:j] = self._zeros_frame
        self.frames_partial += 1
        return PartialFrame(tuple(runs))

    # --- control and report -----------------------------------------------------------------------
    def set_payload_type(self, payload_type: int) -> None:
        """A re-INVITE changed the negotiated G.711 law; the stream and its counters go on."""
        self.payload_type = payload_type

    @property
    def ssrc(self) -> int | None:
        return self._ssrc

    def stats(self) -> ReceiverStats:
        return ReceiverStats.of(
            self,
            lost=self._lost_before + (self._lost_now() if self._ssrc is not None else 0),
            jitter=self._jitter,
            max_late=self.max_late,
            max_depth=self.max_depth,
            ssrc=self._ssrc,
        )
