"""Symmetric media: learn where the peer's RTP/UDPTL really comes from, after Asterisk's strict RTP.

Behind a NAT a peer's SDP names its private address, while its media reaches us from the NAT's public
address and port. Symmetric RTP (RFC 4961) answers that by sending our media back to where theirs comes
from. Latching onto any source would let a stray stream or a hijacker move a fax mid-page, so a
:class:`MediaLatch` follows the rules of Asterisk's ``strictrtp``/``probation`` learning:

* until the peer is learned, our media goes to the SDP's address;
* a datagram from the SDP's own address is accepted and locks at once;
* another source must send ``probation`` consecutive datagrams, with consecutive sequence numbers, from
  one address, with nothing from elsewhere in between; the last of them locks and is accepted, the ones
  before it are dropped (a source on probation is not trusted yet);
* once locked, datagrams from any other source are dropped and counted: nothing moves us mid-page;
* a new SDP address (a re-INVITE, the switch to T.38, the answer) starts learning again.

A repeat of the candidate's last sequence number (UDPTL's idle resends of a control packet, T.38 §9.1,
or an RTP duplicate) neither advances nor restarts its probation. Sans-I/O: addresses and sequence
numbers in, verdicts out; the socket edges are :class:`t38.audio_transport.RtpEndpoint` and
:class:`t38.transport.UdptlEndpoint`.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["DEFAULT_PROBATION", "LatchStats", "MediaLatch", "Verdict", "rtp_sequence", "udptl_sequence"]

DEFAULT_PROBATION = 4
"""Consecutive datagrams a source other than the SDP's must send before we lock to it (Asterisk's
``probation`` default)."""

Address = tuple[str, int]


class Verdict(enum.Enum):
    """What to do with one datagram."""

    ACCEPT = "accept"
    """From the locked peer: use it."""
    LOCKED = "locked"
    """Use it, and the peer is now locked to its source (:attr:`MediaLatch.target` changed)."""
    PROBATION = "probation"
    """Dropped while learning: no SDP address yet, or a source that has not passed probation."""
    FOREIGN = "foreign"
    """Dropped: the peer is locked to another address."""

    @property
    def accepted(self) -> bool:
        return self is Verdict.ACCEPT or self is Verdict.LOCKED


@dataclass(frozen=True, slots=True)
class LatchStats:
    """What the latch learned, for the call report."""

    sdp_addr: Address | None
    learned_addr: Address | None  # where our media goes once locked; None while learning
    learned_by: str | None  # "sdp" (the SDP's own address spoke) or "latched" (another, after probation)
    probation: int
    dropped_learning: int  # datagrams dropped while learning (no SDP yet, or sources on probation)
    dropped_locked: int  # datagrams from other sources after the lock
    relearns: int  # times a new SDP address restarted learning

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def canonical(addr: tuple[Any, ...]) -> Address:
    """(host, port) with the host in canonical text form (IPv6 4-tuples and spellings compare equal)."""
    return ipaddress.ip_address(addr[0]).compressed, int(addr[1])


def rtp_sequence(datagram: bytes | memoryview) -> int | None:
    """The RTP sequence number (RFC 3550 §5.1), or None for what is not an RTP version 2 packet."""
    if len(datagram) < 12 or datagram[0] >> 6 != 2:
        return None
    return (datagram[2] << 8) | datagram[3]


def udptl_sequence(datagram: bytes | memoryview) -> int | None:
    """The UDPTL seq-number, the first two octets of every UDPTLPacket (T.38 §9.1), or None if too short."""
    if len(datagram) < 3:
        return None
    return (datagram[0] << 8) | datagram[1]


class MediaLatch:
    """Decides, datagram by datagram, whether the peer's media is accepted and where ours must go.

    ``check(source, seq)`` for each datagram; :attr:`target` is where to send; :meth:`set_sdp` for each
    SDP address the signalling brings. Bad arguments raise ``ValueError``; nothing from the network does.
    """

    def __init__(self, sdp_addr: Address | None = None, probation: int = DEFAULT_PROBATION) -> None:
        if probation < 1:
            raise ValueError(f"probation must be at least 1, not {probation}")
        self.probation = probation
        self._sdp: Address | None = None
        self._locked: Address | None = None
        self._learned_by: str | None = None
        self._candidate: Address | None = None
        self._last_seq = 0
        self._count = 0  # consecutive datagrams from the candidate
        self.dropped_learning = 0
        self.dropped_locked = 0
        self.relearns = 0
        if sdp_addr is not None:
            self.set_sdp(sdp_addr)

    @property
    def sdp_addr(self) -> Address | None:
        return self._sdp

    @property
    def locked(self) -> bool:
        return self._locked is not None

    @property
    def learned_addr(self) -> Address | None:
        return self._locked

    @property
    def learned_by(self) -> str | None:
        return self._learned_by

    @property
    def target(self) -> Address | None:
        """Where our media goes: the learned address once locked, the SDP's until then (None: no SDP)."""
        return self._locked or self._sdp

    def set_sdp(self, addr: Address) -> bool:
        """The signalling names the peer's media address. A different one than before starts learning
        again (returns True); the same one keeps what was learned."""
        addr = canonical(addr)
        if addr == self._sdp:
            return False
        if self._sdp is not None:
            self.relearns += 1
        self._sdp = addr
        self._locked = self._learned_by = self._candidate = None
        self._count = 0
        return True

    def check(self, source: tuple[Any, ...], seq: int | None) -> Verdict:
        """The verdict for one datagram from ``source`` carrying sequence number ``seq`` (None: the
        datagram has none we could read; it can lock only from the SDP's address)."""
        if source.__class__ is not tuple or len(source) != 2:
            source = canonical(source)
        if self._locked is not None:
            if source == self._locked:
                return Verdict.ACCEPT
            self.dropped_locked += 1
            return Verdict.FOREIGN
        if self._sdp is None:
            self.dropped_learning += 1
            return Verdict.PROBATION
        if source == self._sdp:
            return self._lock(source, "sdp")
        if seq is None:
            self.dropped_learning += 1
            return Verdict.PROBATION
        if source != self._candidate:
            self._candidate, self._count = source, 1
        elif seq == (self._last_seq + 1) & 0xFFFF:
            self._count += 1
        elif seq != self._last_seq:  # a gap or a jump back: probation starts over from this one
            self._count = 1
        self._last_seq = seq
        if self._count >= self.probation:
            return self._lock(source, "latched")
        self.dropped_learning += 1
        return Verdict.PROBATION

    def _lock(self, source: Address, how: str) -> Verdict:
        self._locked, self._learned_by = source, how
        self._candidate, self._count = None, 0
        return Verdict.LOCKED

    def stats(self) -> LatchStats:
        return LatchStats(
            sdp_addr=self._sdp,
            learned_addr=self._locked,
            learned_by=self._learned_by,
            probation=self.probation,
            dropped_learning=self.dropped_learning,
            dropped_locked=self.dropped_locked,
            relearns=self.relearns,
        )

    def __repr__(self) -> str:
        state = f"locked {self._locked} ({self._learned_by})" if self._locked else "learning"
        return f"<MediaLatch sdp={self._sdp} {state}>"
