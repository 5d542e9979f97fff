"""RFC 3262 reliable provisional responses (option tag ``100rel``, method PRACK), sans-I/O bookkeeping.

Split from ``sip.core`` so the core only glues these to its calls:

* ``ReliableSender`` (UAS, one per INVITE we answer when the INVITE ``Require``s 100rel): numbers our
  18x with RSeq (§3: random start, +1 each), holds a second 18x back until the first is PRACKed, keeps
  retransmitting the unacknowledged one from T1 doubling with no T2 cap (§3, unlike a 2xx) and gives up
  after 64*T1 (the core then answers the INVITE 5xx), matches a PRACK's RAck to the one unacknowledged
  response, and holds back a 2xx while an unacknowledged 18x carried a session description (§3).
* ``ReliableReceiver`` (UAC, one per INVITE we send): per early dialog, is a reliable 18x new (PRACK it),
  an old one again (a retransmission: already PRACKed, the PRACK transaction retransmits by itself) or
  out of order (RSeq not one higher: neither PRACKed nor processed, §4)?
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from sip.dialog import Dialog
from sip.message import Headers, Request, Response
from sip.timers import TimerHandle, TimerQueue

__all__ = [
    "OPTION_TAG",
    "Arrival",
    "ReliableReceiver",
    "ReliableSender",
    "format_rack",
    "is_reliable_provisional",
    "parse_rack",
    "parse_rseq",
    "requires_100rel",
]

OPTION_TAG = "100rel"
#: RSeq and RAck numbers are 1..2**31-1 (RFC 3262 §7.1); we start below 2**30 so they never wrap.
MAX_RSEQ = 2**31 - 1


def _number(text: str) -> int | None:
    text = text.strip(" \t")
    if not text.isdigit() or not text.isascii() or len(text) > 10:
        return None
    value = int(text)
    return value if 0 <= value <= 2**32 - 1 else None


def parse_rseq(value: str | None) -> int | None:
    """``RSeq: 988789`` → 988789 (§7.1); None when absent or not a number in range."""
    if value is None:
        return None
    n = _number(value)
    return n if n is not None and 1 <= n <= MAX_RSEQ else None


def parse_rack(value: str | None) -> tuple[int, int, str] | None:
    """``RAck: 776656 1 INVITE`` → (response-num, CSeq-num, method) (§7.2); None when malformed."""
    if value is None:
        return None
    parts = value.split()
    if len(parts) != 3:
        return None
    rseq, cseq = _number(parts[0]), _number(parts[1])
    if rseq is None or cseq is None or not parts[2].isascii():
        return None
    return rseq, cseq, parts[2]


def format_rack(rseq: int, cseq: int, method: str) -> str:
    return f"{rseq} {cseq} {method}"


def requires_100rel(msg: Request | Response) -> bool:
    return any(tag.lower() == OPTION_TAG for tag in msg.require)


def is_reliable_provisional(resp: Response) -> bool:
    """A 101-199 the UAS sent reliably: ``Require: 100rel`` and a valid RSeq (§4)."""
    rseq = parse_rseq(resp.headers.get("RSeq"))
    return 100 < resp.status < 200 and requires_100rel(resp) and rseq is not None


# ---------------------------------------------------------------------------------------------- UAS


@dataclass(slots=True)
class _Sent:
    response: Response
    rseq: int
    has_body: bool
    acknowledged: bool = False


@dataclass(slots=True)
class _Waiting:
    status: int
    body: bytes
    content_type: str | None


class ReliableSender:
    """Our reliable 18x to one INVITE (RFC 3262 §3); the core sends, this decides and times.

    ``retransmit(response, now)`` re-sends the unacknowledged response (None on TCP/TLS: the transport
    is reliable, only the 64*T1 limit applies); ``give_up(now)`` is called when it was never PRACKed.
    """

    def __init__(
        self,
        timers: TimerQueue,
        t1: float,
        cseq: int,
        first_rseq: int,
        *,
        retransmit: Callable[[Response, float], None] | None,
        give_up: Callable[[float], None],
        method: str = "INVITE",
    ) -> None:
        self.timers = timers
        self.t1 = t1
        self.cseq = cseq
        self.method = method
        self.next_rseq = max(1, min(first_rseq, MAX_RSEQ))
        self._retransmit = retransmit
        self._give_up = give_up
        self.sent: list[_Sent] = []
        #: provisional responses the application asked for while one was unacknowledged (§3: one at a time)
        self.waiting: list[_Waiting] = []
        #: the body and Content-Type of a 2xx held back until the PRACK (§3), or None
        self.held_answer: tuple[bytes, str] | None = None
        self.final_sent = False
        self._interval = t1
        self._timer: TimerHandle | None = None
        self._limit: TimerHandle | None = None

    @property
    def unacknowledged(self) -> _Sent | None:
        last = self.sent[-1] if self.sent else None
        return last if last is not None and not last.acknowledged else None

    def headers(self) -> Headers:
        """Require and RSeq for the next reliable provisional response."""
        return Headers([("Require", OPTION_TAG), ("RSeq", str(self.next_rseq))])

    def can_send_now(self) -> bool:
        return self.unacknowledged is None

    def wait(self, status: int, body: bytes, content_type: str | None) -> None:
        self.waiting.append(_Waiting(status, body, content_type))

    def next_waiting(self) -> _Waiting | None:
        return self.waiting.pop(0) if self.waiting and self.can_send_now() and not self.final_sent else None

    def sent_response(self, response: Response, now: float) -> None:
        """The core sent ``response`` with the headers of ``headers()``: start its timers."""
        self.sent.append(_Sent(response, self.next_rseq, bool(response.body)))
        self.next_rseq = min(self.next_rseq + 1, MAX_RSEQ)
        self._stop_timers()
        self._interval = self.t1
        if self._retransmit is not None:
            self._timer = self.timers.schedule(now + self._interval, self._on_timer, "100rel")
        self._limit = self.timers.schedule(now + 64 * self.t1, self._on_limit, "100rel-limit")

    def must_hold_2xx(self) -> bool:
        """§3: no 2xx while an unacknowledged reliable provisional response carried a session description."""
        return any(s.has_body and not s.acknowledged for s in self.sent)

    def acknowledge(self, rack: tuple[int, int, str]) -> bool:
        """A PRACK's RAck: True when it matches an unacknowledged response (answer 200), else 481 (§3)."""
        rseq, cseq, method = rack
        if cseq != self.cseq or method != self.method:
            return False
        for s in self.sent:
            if s.rseq == rseq and not s.acknowledged:
                s.acknowledged = True
                if self.unacknowledged is None:
                    self._stop_timers()
                return True
        return False

    def final(self) -> None:
        """A final response went out: stop retransmitting (PRACKs are still matched), drop the waiting."""
        self.final_sent = True
        self.waiting.clear()
        self.held_answer = None
        self._stop_timers()

    def _stop_timers(self) -> None:
        for handle in (self._timer, self._limit):
            if handle is not None:
                handle.cancel()
        self._timer = self._limit = None

    def _on_timer(self, now: float) -> None:
        self._timer = None
        pending = self.unacknowledged
        if pending is None or self.final_sent or self._retransmit is None:
            return
        self._retransmit(pending.response, now)
        self._interval *= 2
        self._timer = self.timers.schedule(now + self._interval, self._on_timer, "100rel")

    def _on_limit(self, now: float) -> None:
        self._limit = None
        if self.unacknowledged is None or self.final_sent:
            return
        self._stop_timers()
        self._give_up(now)


# ---------------------------------------------------------------------------------------------- UAC


class Arrival(enum.Enum):
    NEW = "new"  # PRACK it and process it
    RETRANSMISSION = "retransmission"  # already PRACKed: drop it
    OUT_OF_ORDER = "out of order"  # RSeq skipped one: neither PRACK nor process it (§4)


@dataclass(slots=True)
class ReliableReceiver:
    """The RSeq seen last in each early dialog (keyed by the UAS's To tag) of one INVITE (§4).

    ``dialogs`` holds the early dialogs of other forks than the call's own, so their PRACKs count CSeq.
    """

    last_rseq: dict[str, int] = field(default_factory=dict)
    dialogs: dict[str, Dialog] = field(default_factory=dict)

    def arrival(self, remote_tag: str, rseq: int) -> Arrival:
        last = self.last_rseq.get(remote_tag)
        if last is None or rseq == last + 1:
            self.last_rseq[remote_tag] = rseq
            return Arrival.NEW
        if rseq <= last:
            return Arrival.RETRANSMISSION
        return Arrival.OUT_OF_ORDER
