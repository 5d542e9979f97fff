"""UDPTL framing and error recovery for T.38 over UDP, sans-I/O.

ITU-T T.38 §9 carries IFP packets (§7.2) over UDP inside UDPTL packets whose ASN.1 is in Annex A and whose
encoding is ALIGNED PER (ITU-T X.691)::

    UDPTLPacket ::= SEQUENCE {
        seq-number          INTEGER (0..65535),                          -- 2 octets, big-endian (§9.2.1)
        primary-ifp-packet  TYPE-IDENTIFIER.&Type(IFPPacket),            -- open type: length + octets
        error-recovery      CHOICE {                                     -- 1 bit, padded to one octet
            secondary-ifp-packets SEQUENCE OF TYPE-IDENTIFIER.&Type(IFPPacket),   -- 0x00: redundancy
            fec-info SEQUENCE {                                                   -- 0x80: parity FEC
                fec-npackets INTEGER,                                  -- length octet(s) + value
                fec-data     SEQUENCE OF OCTET STRING } } }            -- count + length-prefixed parity

Length determinants (X.691 §11.9): ``0xxxxxxx`` for 0..127, ``10xxxxxx xxxxxxxx`` for 128..16383, and
``11mmmmmm`` for a fragment of m*16384 items followed by another determinant.

Three sans-I/O pieces live here: :class:`UdptlPacket` (one datagram, ``parse``/``__bytes__``),
:class:`UdptlSender` (history, redundancy deeper for T.30 control than for image data, or parity FEC;
never above the peer's T38FaxMaxDatagram; idle resends of a control tail) and
:class:`UdptlReceiver` (reordering, duplicates, recovery, sequence wrap, bounded waiting for gaps).
Time enters only as the ``now`` argument; nothing here touches a socket or a clock.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

__all__ = [
    "DEFAULT_CONTROL_REDUNDANCY",
    "DEFAULT_FEC_ENTRIES",
    "DEFAULT_FEC_SPAN",
    "DEFAULT_IDLE_RESENDS",
    "DEFAULT_IMAGE_REDUNDANCY",
    "DEFAULT_LOCAL_MAX_DATAGRAM",
    "DEFAULT_PEER_MAX_DATAGRAM",
    "DEFAULT_REORDER_TIMEOUT",
    "DEFAULT_REORDER_WINDOW",
    "Delivered",
    "EcMode",
    "FecInfo",
    "Gap",
    "IfpKind",
    "Udptl",
    "UdptlConfig",
    "UdptlError",
    "UdptlPacket",
    "UdptlReceiver",
    "UdptlSender",
    "UdptlSizeError",
    "UdptlStats",
    "classify_ifp",
    "fec_coverage",
    "ifp_length",
]

log = logging.getLogger(__name__)

SEQ_MODULO = 0x10000
"""seq-number is INTEGER (0..65535) and wraps from 65535 to 0 (T.38 §9.2.1)."""

ERROR_RECOVERY_SECONDARY = 0x00
"""CHOICE index 0 (secondary-ifp-packets) in the top bit of an octet; the other 7 bits are PER padding."""
ERROR_RECOVERY_FEC = 0x80
"""CHOICE index 1 (fec-info)."""

DEFAULT_IMAGE_REDUNDANCY = 4
"""Previous IFP packets repeated after an image-data packet (V.27ter/V.29/V.17 data, T.38 §7.3.2).

Chosen for the loss benchmark: with 4 copies behind the primary a packet is lost only when 5 datagrams in a
row are lost (0.3**5 = 0.24 % at 30 % random loss), and ECM retransmits what still goes missing.
Measured with two spandsp engines in virtual time, 3 fine ECM pages, 30 ms jitter, default settings:
20/20 faxes at 20 % and at 30 % random loss each way. At 400 octets of MaxDatagram, 4 image packets of
V.17 14400 history is about what fits."""
DEFAULT_CONTROL_REDUNDANCY = 8
"""Previous IFP packets repeated after a T.30 control packet (indicators and V.21 HDLC, T.38 §7.3).

Deeper than for image data: a lost DCS, CFR, MCF or EOP costs a T.30 timeout (seconds) or the call, and
control packets are small, so a deep history is cheap until MaxDatagram trims it."""
DEFAULT_FEC_SPAN = 3
"""fec-npackets: how many packets one parity entry covers (T.38 Annex C)."""
DEFAULT_FEC_ENTRIES = 3
"""Parity entries per datagram; together they cover the previous span*entries packets."""
DEFAULT_PEER_MAX_DATAGRAM = 400
"""Assumed T38FaxMaxDatagram of a peer that announced none (Asterisk assumes the same)."""
DEFAULT_LOCAL_MAX_DATAGRAM = 1400
"""The T38FaxMaxDatagram we announce: the largest datagram we accept."""
DEFAULT_REORDER_WINDOW = 16
"""Packets past a hole that the receiver holds before it declares the hole unrecoverable."""
DEFAULT_REORDER_TIMEOUT = 0.3
"""Seconds the receiver waits for a hole to be filled before it lets the later packets through."""
DEFAULT_IDLE_RESENDS = (0.02, 0.06, 0.12, 0.24)
"""Seconds after a control datagram at which it is sent again while nothing newer follows.

Redundancy only protects a packet if later datagrams follow, and the tail of a T.30 message (the end of
the HDLC frame, its sig-end, the no-signal indicator) is followed by silence until the far end answers.
Losing that tail leaves the far end's HDLC receiver waiting for a carrier that never stops, which spandsp
ends with "The HDLC carrier did not stop in a timely manner". Sending the last datagram again, same
seq-number, spread over a quarter second, protects the tail against bursts (in our virtual-time fax
runs with Gilbert-Elliott bursts of mean length 3 and 10 % burst loss: 14/20 faxes without, 20/20 with).
A receiver drops the copies it does not need as duplicates (spandsp: "repeat packet")."""

MAX_REDUNDANCY = 15
"""Deepest redundancy we send: Asterisk reads at most 15 secondaries, FreeSWITCH buffers 16."""
MAX_FEC_SPAN = 32
"""Largest fec-npackets we accept; larger values are absurd (real senders use 3 to 5)."""
MAX_FEC_ENTRIES = 32
"""Largest number of parity entries we accept in one datagram."""
MAX_SECONDARIES = 255
"""Largest number of secondary IFP packets we accept in one datagram."""
RESYNC_DISTANCE = 1000
"""A sequence jump larger than this (either way) is a restart of the peer's numbering, not loss."""
_HISTORY = 128
"""Packets of received content and delivery outcome the receiver remembers behind the next expected one."""

EcMode = Literal["none", "redundancy", "fec"]
"""T38FaxUdpEC: no error recovery, t38UDPRedundancy, or t38UDPFEC (T.38 Annex D/E)."""


class UdptlError(ValueError):
    """The peer sent a datagram that is not a valid UDPTL packet (T.38 §9.1, Annex A).

    This is the peer's fault: the transport counts it as malformed and drops the datagram."""


class UdptlSizeError(ValueError):
    """An IFP packet cannot fit the peer's T38FaxMaxDatagram even without error recovery.

    This is our fault (the engine was allowed larger IFP packets than the peer accepts); see
    :meth:`UdptlSender.max_ifp_size`."""


# ---------------------------------------------------------------------------------------------------------
# Aligned PER primitives (X.691 §11.9 length determinants, §11.2 open types)
# ---------------------------------------------------------------------------------------------------------

_FRAGMENT = 16384


def _encode_length(n: int) -> bytes:
    """A length determinant for a count below 16384 (one or two octets)."""
    if n < 0x80:
        return bytes((n,))
    if n < _FRAGMENT:
        return bytes((0x80 | (n >> 8), n & 0xFF))
    raise ValueError(f"length {n} needs fragmentation")


def _encode_octets(data: bytes) -> bytes:
    """An unconstrained octet string (or open type contents) with its length determinant(s).

    From 16384 octets on, X.691 §11.9.3.8 cuts the string into fragments of m*16K (m = 1..4), each after
    an ``11mmmmmm`` octet, and ends with an ordinary determinant for the rest (possibly 0)."""
    if len(data) < _FRAGMENT:
        return _encode_length(len(data)) + data
    out = bytearray()
    pos = 0
    remaining = len(data)
    while remaining >= _FRAGMENT:
        m = min(remaining // _FRAGMENT, 4)
        out.append(0xC0 | m)
        out += data[pos : pos + m * _FRAGMENT]
        pos += m * _FRAGMENT
        remaining -= m * _FRAGMENT
    out += _encode_length(remaining) + data[pos:]
    return bytes(out)


def _length_overhead(n: int) -> int:
    """Octets of length determinant(s) in front of an n-octet string."""
    if n < 0x80:
        return 1
    if n < _FRAGMENT:
        return 2
    blocks = n // _FRAGMENT  # 16K blocks, sent in fragments of up to 4 blocks, one octet each
    return (blocks + 3) // 4 + _length_overhead(n % _FRAGMENT)


def _encode_unconstrained_int(value: int) -> bytes:
    """An unconstrained INTEGER: length octet, then the shortest two's-complement octets (X.691 §11.8)."""
    n = max(1, (value.bit_length() + 8) // 8)  # +8 leaves room for the sign bit
    return bytes((n,)) + value.to_bytes(n, "big", signed=True)


class _Reader:
    """Bounds-checked cursor over a datagram; every failure is a :class:`UdptlError` naming the field."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def octet(self, what: str) -> int:
        if self.pos >= len(self.data):
            raise UdptlError(f"truncated before {what}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise UdptlError(f"{what}: length {n} but only {self.remaining} octets left")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def length(self, what: str) -> tuple[int, bool]:
        """One length determinant: (value, is_fragment). A fragment's value is m*16384."""
        first = self.octet(f"{what} length")
        if first & 0x80 == 0:
            return first, False
        if first & 0x40 == 0:
            return ((first & 0x3F) << 8) | self.octet(f"{what} length (second octet)"), False
        m = first & 0x3F
        if not 1 <= m <= 4:
            raise UdptlError(f"{what}: bad fragment multiplier {m}")
        return m * _FRAGMENT, True

    def count(self, what: str, limit: int) -> int:
        """The item count of a SEQUENCE OF; a fragmented count is absurd for UDPTL."""
        n, fragment = self.length(what)
        if fragment or n > limit:
            raise UdptlError(f"absurd {what} count {n} (limit {limit})")
        return n

    def octets(self, what: str) -> bytes:
        """An open type or unconstrained OCTET STRING, reassembling fragments."""
        parts = []
        while True:
            n, fragment = self.length(what)
            parts.append(self.take(n, what))
            if not fragment:
                return b"".join(parts)


# ---------------------------------------------------------------------------------------------------------
# The UDPTL packet
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FecInfo:
    """fec-info of T.38 Annex A: the span and the parity octet strings (Annex C).

    ``npackets`` is fec-npackets, the number of packets each parity entry is the XOR of; which packets
    those are is given by :func:`fec_coverage`."""

    npackets: int
    parity: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class UdptlPacket:
    """One UDPTL datagram (T.38 §9.1-9.3, Annex A).

    Error recovery is either ``secondary`` (earlier IFP packets, newest first: ``secondary[0]`` is
    seq-1) or ``fec``; with neither it is encoded as an empty list of secondaries, as every
    implementation does for "no error recovery"."""

    seq: int
    primary: bytes
    secondary: tuple[bytes, ...] = ()
    fec: FecInfo | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.seq < SEQ_MODULO:
            raise ValueError(f"seq-number {self.seq} out of 0..65535")
        if self.fec is not None and self.secondary:
            raise ValueError("error-recovery is a CHOICE: secondary packets or FEC, not both")

    @classmethod
    def parse(cls, data: bytes) -> UdptlPacket:
        """Decode one datagram; raise :class:`UdptlError` for anything truncated, inconsistent or absurd."""
        r = _Reader(bytes(data))
        if r.remaining < 2:
            raise UdptlError(f"datagram of {r.remaining} octets is shorter than seq-number")
        seq = (r.octet("seq-number") << 8) | r.octet("seq-number")
        primary = r.octets("primary-ifp-packet")
        if not primary:
            raise UdptlError("primary-ifp-packet is empty")
        choice = r.octet("error-recovery")
        secondary: tuple[bytes, ...] = ()
        fec = None
        if choice & 0x80 == ERROR_RECOVERY_SECONDARY:
            n = r.count("secondary-ifp-packets", min(MAX_SECONDARIES, r.remaining))
            secondary = tuple(r.octets(f"secondary-ifp-packet {i}") for i in range(n))
        else:
            nlen = r.octet("fec-npackets length")
            if not 1 <= nlen <= 4:
                raise UdptlError(f"fec-npackets length {nlen} not in 1..4")
            npackets = int.from_bytes(r.take(nlen, "fec-npackets"), "big", signed=True)
            if not 0 <= npackets <= MAX_FEC_SPAN:
                raise UdptlError(f"absurd fec-npackets {npackets}")
            n = r.count("fec-data", min(MAX_FEC_ENTRIES, r.remaining))
            fec = FecInfo(npackets, tuple(r.octets(f"fec-data {i}") for i in range(n)))
        if r.remaining:
            raise UdptlError(f"{r.remaining} octets after error-recovery")
        return cls(seq, primary, secondary, fec)

    def __bytes__(self) -> bytes:
        if not self.primary:
            raise ValueError("primary-ifp-packet must not be empty")
        out = bytearray(self.seq.to_bytes(2, "big"))
        out += _encode_octets(self.primary)
        if self.fec is None:
            if any(not s for s in self.secondary):
                raise ValueError("secondary IFP packets must not be empty")
            out.append(ERROR_RECOVERY_SECONDARY)
            out += _encode_length(len(self.secondary))
            for s in self.secondary:
                out += _encode_octets(s)
        else:
            out.append(ERROR_RECOVERY_FEC)
            out += _encode_unconstrained_int(self.fec.npackets)
            out += _encode_length(len(self.fec.parity))
            for p in self.fec.parity:
                out += _encode_octets(p)
        return bytes(out)


def fec_coverage(seq: int, npackets: int, entries: int, index: int) -> list[int]:
    """Sequence numbers XORed into parity entry ``index`` of packet ``seq`` (T.38 Annex C).

    T.38 §9.3.1 and Annex A fix only the fields (fec-npackets and the parity strings); the mapping of each
    entry to packets is the interleaving used by the spandsp lineage (Asterisk ``main/udptl.c``, FreeSWITCH
    ``mod_spandsp/udptl.c``), which we follow so that both recover from our parity and we from theirs:
    the ``entries`` parity strings of packet q together cover the npackets*entries packets before q, and
    entry i covers every ``entries``-th of them, starting at q - npackets*entries + i::

        span 3, entries 3, q = 20:  entry 0 -> 11, 14, 17;  entry 1 -> 12, 15, 18;  entry 2 -> 13, 16, 19

    A burst of up to ``entries`` consecutive losses thus falls into different entries and is repairable.
    The result is modulo 65536 (sequence wrap)."""
    start = seq - npackets * entries + index
    return [(start + k * entries) % SEQ_MODULO for k in range(npackets)]


def _xor(parts: list[bytes]) -> bytes:
    """XOR of octet strings, the shorter ones padded with zeros (T.38 Annex C.1.1)."""
    size = max((len(p) for p in parts), default=0)
    acc = 0
    for p in parts:
        acc ^= int.from_bytes(p.ljust(size, b"\x00"), "big")
    return acc.to_bytes(size, "big") if size else b""


# ---------------------------------------------------------------------------------------------------------
# IFP classification (T.38 §7.2-7.4)
# ---------------------------------------------------------------------------------------------------------


class IfpKind(enum.Enum):
    """What an IFP packet carries, for choosing its redundancy depth."""

    CONTROL = "control"
    """t30-indicator (§7.3.1); t30-data of the V.21 channel (T.30 HDLC frames), V.8 or V.34 control; and
    any packet that ends a high-speed signal (a *-sig-end field, §7.4)."""
    IMAGE = "image"
    """t30-data of a high-speed modem (V.27ter, V.29, V.17, V.33, V.34 primary channel): page data, TCF."""


# T30_DATA TYPE values (T.38 §7.3.2): root values 0..8, extension values 9.. after the "..." marker.
_DATA_V21 = 0
_DATA_V8 = 9
_DATA_V34_PRI_RATE = 10
_DATA_V34_CC_1200 = 11
_CONTROL_DATA_TYPES = frozenset({_DATA_V21, _DATA_V8, _DATA_V34_PRI_RATE, _DATA_V34_CC_1200})
# field-type values (T.38 §7.4) that end a signal: hdlc-sig-end, hdlc-fcs-OK-sig-end,
# hdlc-fcs-BAD-sig-end, t4-non-ecm-sig-end.
_SIG_END_FIELDS = frozenset({1, 4, 5, 7})


def _data_fields(ifp: bytes, t38_version: int) -> tuple[int, list[int]] | None:
    """(encoded length, field-type of each field) of an IFP packet, or None if it does not parse.

    Data-Field (§7.4) is a count, then per field a header (bit 7 field-data present, then field-type)
    and field-data as a 16-bit length-1 and the octets. Version 0 (T.38 1998, before the corrigendum)
    has 4-bit headers (3-bit field-type, no extension bit), so two fields without data share an octet;
    later versions have a 5-bit header padded to an octet, or two octets for an extension field-type.
    We read the layout as spandsp writes and reads it."""
    n = len(ifp)
    if n < 1:
        return None
    first = ifp[0]
    pos = 2 if first & 0x20 else 1
    if pos > n:
        return None
    if first & 0x80 == 0:
        return pos, []
    if first & 0x40 == 0 or pos >= n:
        return None  # an indicator never has a data field
    count = ifp[pos]
    if count & 0x80:
        return None  # more than 127 fields in one IFP: not something a real sender produces
    pos += 1
    types: list[int] = []
    half = False
    for _ in range(count):
        if pos >= n:
            return None
        octet = ifp[pos]
        if t38_version == 0:
            if half:
                present, kind = octet & 0x08, octet & 0x07
                pos += 1
                half = False
            else:
                present, kind = octet & 0x80, (octet >> 4) & 0x07
                if present:
                    pos += 1
                else:
                    half = True
        elif octet & 0x40:
            if pos + 1 >= n:
                return None
            present, kind = octet & 0x80, 8 + (((octet << 2) & 0x3C) | (ifp[pos + 1] >> 6))
            pos += 2
        else:
            present, kind = octet & 0x80, (octet >> 3) & 0x07
            pos += 1
        types.append(kind)
        if present:
            if pos + 2 > n:
                return None
            pos += 2 + ((ifp[pos] << 8) | ifp[pos + 1]) + 1
        if pos > n:
            return None
    if half:
        pos += 1
    return (pos, types) if pos <= n else None


def classify_ifp(ifp: bytes, t38_version: int = 0) -> IfpKind:
    """Control or image, from the header of an IFP packet (T.38 §7.2-7.4, aligned PER of Annex A).

    First octet: bit 7 data-field present (the OPTIONAL bitmap), bit 6 Type-of-msg CHOICE (0
    t30-indicator, 1 t30-data), bit 5 the ENUMERATED extension bit, bits 4..1 the root value; an
    extension value takes 6 more bits spilling into the second octet. Indicators (CNG, CED, preamble,
    training, no-signal) and V.21 data (the T.30 HDLC control channel at 300 bit/s) are control. So is a
    high-speed packet carrying a *-sig-end field: it is tiny, and when it is lost the far end waits for a
    carrier that never stops, then fails the page. Anything unreadable errs towards control."""
    if not ifp:
        return IfpKind.CONTROL
    first = ifp[0]
    if first & 0x40 == 0:
        return IfpKind.CONTROL
    if first & 0x20:
        if len(ifp) < 2:
            return IfpKind.CONTROL
        data_type = _DATA_V8 + (((first << 2) & 0x3C) | (ifp[1] >> 6))
    else:
        data_type = (first >> 1) & 0x0F
    if data_type in _CONTROL_DATA_TYPES:
        return IfpKind.CONTROL
    fields = _data_fields(ifp, t38_version)
    if fields is not None and _SIG_END_FIELDS.intersection(fields[1]):
        return IfpKind.CONTROL
    return IfpKind.IMAGE


def ifp_length(ifp: bytes, t38_version: int = 0) -> int | None:
    """The encoded length of the IFP packet at the start of ``ifp``, or None if it does not parse.

    Parity FEC recovers a packet padded with zeros to the longest packet of its span (Annex C.1.1), and
    spandsp rejects an IFP with trailing octets, so the receiver trims a recovered packet to this length."""
    fields = _data_fields(ifp, t38_version)
    return None if fields is None else fields[0]


def _trim_recovered(data: bytes, t38_version: int) -> bytes:
    """Cut the zero padding off an IFP rebuilt from parity, when its own encoding says where it ends."""
    first = 0 if t38_version == 0 else 1
    for version in (first, 1 - first):
        end = ifp_length(data, version)
        if end is not None and not any(data[end:]):
            return data[:end]
    return data


# ---------------------------------------------------------------------------------------------------------
# Configuration and counters
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UdptlConfig:
    """Every UDPTL knob of one call, with the defaults vfax uses.

    ``peer_max_datagram`` is the peer's T38FaxMaxDatagram (never exceeded); ``local_max_datagram`` is
    the one we announce. ``t38_version`` is the negotiated T38FaxVersion, needed only to read field
    headers when trimming a packet rebuilt from parity. ``image_redundancy`` and ``control_redundancy``
    apply to ec_mode "redundancy"; ``fec_span`` and ``fec_entries`` to "fec" (Asterisk rejects more than
    5 entries and repairs only within 16 packets, so keep entries <= 5 and span*entries < 16 towards it).
    ``reorder_window`` (packets) and ``reorder_timeout`` (seconds) bound how long a hole is waited for.
    ``idle_resends`` are the delays (seconds) at which a control datagram is repeated while the sender
    is otherwise silent; () turns this off."""

    ec_mode: EcMode = "redundancy"
    image_redundancy: int = DEFAULT_IMAGE_REDUNDANCY
    control_redundancy: int = DEFAULT_CONTROL_REDUNDANCY
    fec_span: int = DEFAULT_FEC_SPAN
    fec_entries: int = DEFAULT_FEC_ENTRIES
    local_max_datagram: int = DEFAULT_LOCAL_MAX_DATAGRAM
    peer_max_datagram: int = DEFAULT_PEER_MAX_DATAGRAM
    reorder_window: int = DEFAULT_REORDER_WINDOW
    reorder_timeout: float = DEFAULT_REORDER_TIMEOUT
    idle_resends: tuple[float, ...] = DEFAULT_IDLE_RESENDS
    t38_version: int = 0

    def __post_init__(self) -> None:
        if self.ec_mode not in ("none", "redundancy", "fec"):
            raise ValueError(f"ec_mode {self.ec_mode!r} is not none, redundancy or fec")
        for depth in (self.image_redundancy, self.control_redundancy):
            if not 0 <= depth <= MAX_REDUNDANCY:
                raise ValueError(f"redundancy depth {depth} not in 0..{MAX_REDUNDANCY}")
        if not 1 <= self.fec_span <= MAX_FEC_SPAN or not 0 <= self.fec_entries <= MAX_FEC_ENTRIES:
            raise ValueError(f"fec span 1..{MAX_FEC_SPAN} and entries 0..{MAX_FEC_ENTRIES}")
        if self.fec_span * self.fec_entries > _HISTORY // 2:
            raise ValueError("fec span*entries too large for the receive history")
        if self.peer_max_datagram < 8 or self.local_max_datagram < 8:
            raise ValueError("a max datagram below 8 octets cannot carry any IFP")
        if self.reorder_window < 1 or self.reorder_timeout < 0:
            raise ValueError("reorder window must be >= 1 and timeout >= 0")
        if list(self.idle_resends) != sorted(self.idle_resends) or any(t <= 0 for t in self.idle_resends):
            raise ValueError("idle_resends must be increasing positive delays")


@dataclass
class UdptlStats:
    """Per-call UDPTL counters for the call report (all packets, not octets, except largest_datagram)."""

    sent: int = 0
    """Datagrams sent."""
    largest_datagram: int = 0
    """Octets in the largest datagram sent (never above the peer's T38FaxMaxDatagram)."""
    resent: int = 0
    """Copies of an idle control datagram sent again (not counted in ``sent``), see DEFAULT_IDLE_RESENDS."""
    received: int = 0
    """Well-formed datagrams received."""
    largest_received: int = 0
    """Octets in the largest datagram received (compare with the T38FaxMaxDatagram we announced)."""
    duplicates: int = 0
    """Datagrams whose primary packet had already arrived as a primary (network duplicates, and the
    idle resends of a peer that repeats its last control datagram, as vfax does)."""
    reordered: int = 0
    """Datagrams that arrived after one with a higher sequence number."""
    late: int = 0
    """Primaries that arrived after their packet was delivered from a copy, or given up."""
    recovered_redundancy: int = 0
    """Packets the engine got from a secondary copy and whose primary never arrived (lost, repaired)."""
    recovered_fec: int = 0
    """Packets the engine got rebuilt from parity and whose primary never arrived (lost, repaired)."""
    unrecoverable: int = 0
    """Packets never received nor recovered (the engine sees a jump in seq)."""
    malformed: int = 0
    """Datagrams dropped because they did not decode."""
    resyncs: int = 0
    """Times the peer's numbering jumped so far that the receiver started afresh."""


# ---------------------------------------------------------------------------------------------------------
# Sender
# ---------------------------------------------------------------------------------------------------------


class UdptlSender:
    """Turns IFP packets into UDPTL datagrams with redundancy or FEC (T.38 §9.4.1, Annex C).

    Redundancy: each packet is repeated as a secondary in the datagrams that follow it, for
    ``control_redundancy`` datagrams if it is a control packet and ``image_redundancy`` if it is image
    data. Secondaries must be contiguous (seq-1, seq-2, ... newest first), so a datagram carries back to
    the oldest packet still owed a copy, image packets in between included.

    Every datagram fits ``peer_max_datagram``: error recovery is cut first (oldest secondary first, or
    fewer parity entries), never the primary; a primary that cannot fit alone is :class:`UdptlSizeError`.

    Given the time of each :meth:`send`, :meth:`resends_due` repeats the last datagram while the sender
    is silent after a control packet (``idle_resends``)."""

    def __init__(
        self, config: UdptlConfig | None = None, stats: UdptlStats | None = None, seq: int = 0
    ) -> None:
        self.config = config or UdptlConfig()
        self.stats = stats if stats is not None else UdptlStats()
        self._seq = seq % SEQ_MODULO
        depth = max(self.config.image_redundancy, self.config.control_redundancy)
        depth = max(depth, self.config.fec_span * self.config.fec_entries, 1)
        self._history: deque[tuple[bytes, IfpKind]] = deque(maxlen=depth)
        self._last: bytes | None = None  # the last datagram, if its primary was control
        self._last_at = 0.0
        self._resends = 0  # how many of config.idle_resends were done for it

    @property
    def next_seq(self) -> int:
        """The seq-number the next datagram will carry."""
        return self._seq

    def max_ifp_size(self) -> int:
        """The largest IFP that fits the peer's datagram with no error recovery at all.

        Give this (or less, to leave room for redundancy) to the engine as its maximum IFP size."""
        limit = self.config.peer_max_datagram
        fixed = 2 + 1 + (3 if self.config.ec_mode == "fec" else 1)
        size = limit - fixed - 1
        while size > 0 and size + _length_overhead(size) + fixed > limit:
            size -= 1
        return max(size, 0)

    def send(self, ifp: bytes, now: float | None = None) -> bytes:
        """Encode ``ifp`` as the next datagram and remember it for later redundancy or parity.

        ``now`` (seconds, any clock) is needed only for :meth:`resends_due`."""
        if not ifp:
            raise ValueError("an IFP packet is never empty")
        ifp = bytes(ifp)
        limit = self.config.peer_max_datagram
        base = 2 + _length_overhead(len(ifp)) + len(ifp) + 1
        mode = self.config.ec_mode
        if mode == "fec":
            packet = self._with_fec(ifp, base, limit)
        elif mode == "redundancy":
            packet = self._with_redundancy(ifp, base, limit)
        else:
            packet = UdptlPacket(self._seq, ifp)
            if base + 1 > limit:
                raise UdptlSizeError(f"IFP of {len(ifp)} octets cannot fit T38FaxMaxDatagram {limit}")
        data = bytes(packet)
        assert len(data) <= limit, (len(data), limit)
        kind = classify_ifp(ifp, self.config.t38_version)
        self._history.appendleft((ifp, kind))
        self._last = data if kind is IfpKind.CONTROL and now is not None else None
        self._last_at = now or 0.0
        self._resends = 0
        self._seq = (self._seq + 1) % SEQ_MODULO
        self.stats.sent += 1
        self.stats.largest_datagram = max(self.stats.largest_datagram, len(data))
        return data

    def resends_due(self, now: float) -> list[bytes]:
        """The last datagram again, once, if a resend is due at ``now`` (call it every tick, ~20 ms).

        Only a datagram whose primary is control is repeated, and only while nothing newer was sent;
        several due delays at once (a late call) give one copy."""
        delays = self.config.idle_resends
        if self._last is None or self._resends >= len(delays):
            return []
        due = self._resends
        while due < len(delays) and now - self._last_at >= delays[due] - 1e-9:
            due += 1
        if due == self._resends:
            return []
        self._resends = due
        self.stats.resent += 1
        return [self._last]

    def _with_redundancy(self, ifp: bytes, base: int, limit: int) -> UdptlPacket:
        cfg = self.config
        n = min(cfg.image_redundancy, len(self._history))
        for k, (_, kind) in enumerate(self._history, start=1):
            if k > cfg.control_redundancy:
                break
            if kind is IfpKind.CONTROL:
                n = max(n, k)
        sizes = [_length_overhead(len(s)) + len(s) for s, _ in list(self._history)[:n]]
        while n and base + _length_overhead(n) + sum(sizes[:n]) > limit:
            n -= 1
        if base + 1 > limit:
            raise UdptlSizeError(f"IFP of {len(ifp)} octets cannot fit T38FaxMaxDatagram {limit}")
        return UdptlPacket(self._seq, ifp, tuple(s for s, _ in list(self._history)[:n]))

    def _with_fec(self, ifp: bytes, base: int, limit: int) -> UdptlPacket:
        cfg = self.config
        span = cfg.fec_span
        # Wind up at the start of a stream: only cover packets that were sent (as Asterisk does).
        entries = min(cfg.fec_entries, len(self._history) // span)
        if entries == 0:
            span = 0
        while True:
            parity = tuple(self._parity(span, entries, i) for i in range(entries))
            fec_size = (
                len(_encode_unconstrained_int(span))
                + _length_overhead(entries)
                + sum(_length_overhead(len(p)) + len(p) for p in parity)
            )
            if base + fec_size <= limit:
                return UdptlPacket(self._seq, ifp, fec=FecInfo(span, parity))
            if entries == 0:
                raise UdptlSizeError(f"IFP of {len(ifp)} octets cannot fit T38FaxMaxDatagram {limit}")
            # Fewer entries changes the interleave, so the parity is recomputed, not truncated.
            entries -= 1
            if entries == 0:
                span = 0

    def _parity(self, span: int, entries: int, index: int) -> bytes:
        """XOR of the packets that entry ``index`` covers; history[0] is seq-1."""
        parts = []
        for s in fec_coverage(self._seq, span, entries, index):
            back = (self._seq - s) % SEQ_MODULO  # 1 = previous packet
            parts.append(self._history[back - 1][0])
        return _xor(parts)


# ---------------------------------------------------------------------------------------------------------
# Receiver
# ---------------------------------------------------------------------------------------------------------


class Delivered(NamedTuple):
    """An IFP packet for the engine, in sequence order: ``t38_core_rx_ifp_packet(ifp, len, seq)``."""

    seq: int
    ifp: bytes


class Gap(NamedTuple):
    """``count`` packets from ``seq`` on that were neither received nor recovered in time."""

    seq: int
    count: int


_Source = Literal["primary", "redundancy", "fec"]


@dataclass
class _Fec:
    npackets: int
    parity: tuple[bytes, ...]
    done: set[int] = field(default_factory=set)


class UdptlReceiver:
    """Datagrams in, IFP packets out in sequence order (T.38 §9.1, §9.4.1, Annex C.1.3).

    Sequence numbers are unwrapped to an ever-growing integer internally, so wrap at 65535 needs no
    special case. A packet is delivered when all before it are delivered; a hole is filled by a late
    primary, a secondary copy or parity, or given up once ``reorder_window`` later packets are waiting
    or ``reorder_timeout`` seconds have passed since the hole was seen (call :meth:`poll` on a timer).
    Duplicates and packets older than the delivery point are dropped and counted."""

    def __init__(self, config: UdptlConfig | None = None, stats: UdptlStats | None = None) -> None:
        self.config = config or UdptlConfig()
        self.stats = stats if stats is not None else UdptlStats()
        self._next: int | None = None  # unwrapped seq of the next packet to deliver
        self._highest: int | None = None  # highest unwrapped primary seq seen
        self._held: dict[int, tuple[bytes, _Source, float]] = {}  # ifp, source, arrival time
        self._content: dict[int, bytes] = {}  # delivered and held packets, for parity repair
        self._outcome: dict[int, _Source | Literal["lost"]] = {}
        self._fec: dict[int, _Fec] = {}

    @property
    def expected_seq(self) -> int | None:
        """The seq-number of the next packet to deliver (None before the first datagram)."""
        return None if self._next is None else self._next % SEQ_MODULO

    def next_deadline(self) -> float | None:
        """When :meth:`poll` will give up on the current hole, if one is waiting.

        A hole is known from the moment the first packet after it arrived."""
        if not self._held:
            return None
        return min(arrival for _, _, arrival in self._held.values()) + self.config.reorder_timeout

    def receive(self, datagram: bytes, now: float) -> list[Delivered | Gap]:
        """Take one datagram; return what can now be delivered. Raises :class:`UdptlError` if malformed."""
        try:
            packet = UdptlPacket.parse(datagram)
        except UdptlError:
            self.stats.malformed += 1
            raise
        self.stats.largest_received = max(self.stats.largest_received, len(datagram))
        return self.receive_packet(packet, now)

    def receive_packet(self, packet: UdptlPacket, now: float) -> list[Delivered | Gap]:
        """As :meth:`receive`, for an already decoded packet."""
        self.stats.received += 1
        out: list[Delivered | Gap] = []
        if self._next is None:
            self._start(packet)
        assert self._next is not None
        ext = self._unwrap(packet.seq)
        if abs(ext - self._next) > RESYNC_DISTANCE:
            out += self._resync(packet)
            ext = self._unwrap(packet.seq)
        if ext < self._next:
            self._late_or_duplicate(ext)
            return out
        held = self._held.get(ext)
        if held is not None and held[1] == "primary":
            self.stats.duplicates += 1
            return out
        if self._highest is not None and ext < self._highest:
            self.stats.reordered += 1
        self._highest = ext if self._highest is None else max(self._highest, ext)
        self._hold(ext, packet.primary, "primary", now)
        for back, copy in enumerate(packet.secondary, start=1):
            older = ext - back
            if older < self._next:
                break
            if copy and older not in self._held:
                self._hold(older, copy, "redundancy", now)
        if packet.fec is not None and packet.fec.npackets and packet.fec.parity:
            self._fec[ext] = _Fec(packet.fec.npackets, packet.fec.parity)
            self._repair(now)
        out += self._drain(now)
        return out

    def poll(self, now: float) -> list[Delivered | Gap]:
        """Give up on a hole whose time is up and deliver what follows it."""
        return self._drain(now)

    # -- internals ----------------------------------------------------------------------------------------

    def _late_or_duplicate(self, ext: int) -> None:
        """A primary behind the delivery point: a network duplicate, or late after we stopped waiting.

        A packet delivered from a copy whose primary turns up after all was reordered, not lost: it leaves
        the recovered count, so that count means losses repaired."""
        outcome = self._outcome.get(ext, "primary")
        if outcome == "primary":
            self.stats.duplicates += 1
            return
        self.stats.late += 1
        if outcome == "redundancy":
            self.stats.recovered_redundancy -= 1
        elif outcome == "fec":
            self.stats.recovered_fec -= 1
        if outcome != "lost":
            self._outcome[ext] = "primary"

    def _start(self, packet: UdptlPacket) -> None:
        """Begin just before the first datagram, as far back as its error recovery reaches.

        Every implementation we know numbers a new stream from 0, so a first datagram with a small number
        means the ones before it were lost and are worth waiting for (redundancy or parity may bring
        them). A peer need not start at 0, though (spandsp accepts any first number): further up, the
        copies inside the first datagram tell how many packets came before it."""
        back = len(packet.secondary)
        if packet.fec is not None:
            back = packet.fec.npackets * len(packet.fec.parity)
        window = self.config.reorder_window
        self._next = 0 if packet.seq < window else packet.seq - min(back, window)
        self._highest = None

    def _resync(self, packet: UdptlPacket) -> list[Delivered | Gap]:
        """The peer's numbering jumped (a restarted stream): flush what we hold and start afresh."""
        log.info("UDPTL seq jumped from %s to %d: receiving afresh", self.expected_seq, packet.seq)
        self.stats.resyncs += 1
        out: list[Delivered | Gap] = []
        for ext in sorted(self._held):
            ifp, source, _ = self._held[ext]
            out.append(self._deliver(ext, ifp, source))
        self._held.clear()
        self._content.clear()
        self._outcome.clear()
        self._fec.clear()
        self._start(packet)
        return out

    def _unwrap(self, seq: int) -> int:
        """The unwrapped number nearest to the delivery point for a 16-bit seq-number (serial arithmetic)."""
        assert self._next is not None
        delta = (seq - self._next + SEQ_MODULO // 2) % SEQ_MODULO - SEQ_MODULO // 2
        return self._next + delta

    def _hold(self, ext: int, ifp: bytes, source: _Source, now: float) -> None:
        self._held[ext] = (ifp, source, now)
        self._content[ext] = ifp

    def _repair(self, now: float) -> None:
        """Rebuild missing packets from stored parity until nothing more can be rebuilt (Annex C.1.3)."""
        assert self._next is not None
        progress = True
        while progress:
            progress = False
            for ext, fec in self._fec.items():
                entries = len(fec.parity)
                for index, parity in enumerate(fec.parity):
                    if index in fec.done:
                        continue
                    first = ext - fec.npackets * entries + index
                    covered = [first + k * entries for k in range(fec.npackets)]
                    missing = [c for c in covered if c not in self._content]
                    if len(missing) != 1:
                        if not missing:
                            fec.done.add(index)
                        continue
                    lost = missing[0]
                    fec.done.add(index)
                    if lost < self._next:
                        continue
                    known = [self._content[c] for c in covered if c != lost]
                    if any(len(k) > len(parity) for k in known):
                        log.debug("UDPTL parity of packet %d shorter than the packets it covers", ext)
                        continue
                    rebuilt = _trim_recovered(_xor([parity, *known]), self.config.t38_version)
                    if rebuilt:
                        self._hold(lost, rebuilt, "fec", now)
                        progress = True

    def _drain(self, now: float) -> list[Delivered | Gap]:
        out: list[Delivered | Gap] = []
        if self._next is None:
            return out
        while True:
            while self._next in self._held:
                ifp, source, _ = self._held.pop(self._next)
                out.append(self._deliver(self._next, ifp, source))
                self._next += 1
            if not self._held:
                break
            waiting = max(self._held) - self._next
            deadline = self.next_deadline()
            assert deadline is not None
            if waiting < self.config.reorder_window and now < deadline:
                break
            first = min(self._held)
            count = first - self._next
            for ext in range(self._next, first):
                self._outcome[ext] = "lost"
            self.stats.unrecoverable += count
            out.append(Gap(self._next % SEQ_MODULO, count))
            log.debug("UDPTL gave up on %d packet(s) from seq %d", count, self._next % SEQ_MODULO)
            self._next = first
        for ext in [e for e in self._fec if e <= self._next]:
            del self._fec[ext]  # its parity covers only packets before the delivery point
        self._forget()
        return out

    def _deliver(self, ext: int, ifp: bytes, source: _Source) -> Delivered:
        self._outcome[ext] = source
        if source == "redundancy":
            self.stats.recovered_redundancy += 1
        elif source == "fec":
            self.stats.recovered_fec += 1
        return Delivered(ext % SEQ_MODULO, ifp)

    def _forget(self) -> None:
        """Keep only the recent past: enough for parity repair and for telling duplicates from late ones."""
        assert self._next is not None
        horizon = self._next - _HISTORY
        for store in (self._content, self._outcome):
            if len(store) > 2 * _HISTORY:
                for ext in [e for e in store if e < horizon]:
                    del store[ext]


class Udptl:
    """Sender and receiver of one call sharing one set of counters."""

    def __init__(self, config: UdptlConfig | None = None, seq: int = 0) -> None:
        self.config = config or UdptlConfig()
        self.stats = UdptlStats()
        self.sender = UdptlSender(self.config, self.stats, seq)
        self.receiver = UdptlReceiver(self.config, self.stats)

    def send(self, ifp: bytes, now: float | None = None) -> bytes:
        """Encode the next IFP packet as a datagram."""
        return self.sender.send(ifp, now)

    def resends_due(self, now: float) -> list[bytes]:
        """Copies of the last control datagram due while the sender is idle."""
        return self.sender.resends_due(now)

    def receive(self, datagram: bytes, now: float) -> list[Delivered | Gap]:
        """Decode a datagram and return what can be delivered (raises :class:`UdptlError` if malformed)."""
        return self.receiver.receive(datagram, now)

    def poll(self, now: float) -> list[Delivered | Gap]:
        """Give up on holes whose time is up."""
        return self.receiver.poll(now)
