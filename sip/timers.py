"""SIP timer values (RFC 3261 §17 and Table 4 of Appendix A) and a clock-free timer queue.

``TimerValues`` holds T1/T2/T4 and derives timers A to K from them; a reliable transport (TCP, TLS) zeroes
the timers that only exist to absorb UDP retransmissions (D, I, J, K). ``TimerQueue`` is the sans-I/O
scheduler the transaction layer and the UA core use: callers pass ``now`` in, the edge asks for
``next_deadline()`` and calls ``fire(now)``; nothing here reads a clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["TimerHandle", "TimerQueue", "TimerValues"]


@dataclass(frozen=True, slots=True)
class TimerValues:
    """T1, T2, T4 (RFC 3261 §17.1.1.1, §17.1.2.2) and the timers derived from them, in seconds."""

    t1: float = 0.5  # RTT estimate
    t2: float = 4.0  # maximum retransmit interval for non-INVITE requests and INVITE responses
    t4: float = 5.0  # maximum duration a message stays in the network

    @property
    def timer_a(self) -> float:
        """INVITE request retransmit interval, initially (doubles each time), UDP only."""
        return self.t1

    @property
    def timer_b(self) -> float:
        """INVITE transaction timeout."""
        return 64 * self.t1

    def timer_d(self, reliable: bool) -> float:
        """Wait time for response retransmits in the INVITE client transaction: >32 s UDP, 0 reliable."""
        return 0.0 if reliable else max(32.0, 64 * self.t1)

    @property
    def timer_e(self) -> float:
        """Non-INVITE request retransmit interval, initially (doubles up to T2), UDP only."""
        return self.t1

    @property
    def timer_f(self) -> float:
        """Non-INVITE transaction timeout."""
        return 64 * self.t1

    @property
    def timer_g(self) -> float:
        """INVITE final response retransmit interval, initially."""
        return self.t1

    @property
    def timer_h(self) -> float:
        """Wait time for ACK receipt."""
        return 64 * self.t1

    def timer_i(self, reliable: bool) -> float:
        """Wait time for ACK retransmits: T4 over UDP, 0 reliable."""
        return 0.0 if reliable else self.t4

    def timer_j(self, reliable: bool) -> float:
        """Wait time for retransmits of non-INVITE requests: 64*T1 UDP, 0 reliable."""
        return 0.0 if reliable else 64 * self.t1

    def timer_k(self, reliable: bool) -> float:
        """Wait time for response retransmits in the non-INVITE client transaction: T4 UDP, 0 reliable."""
        return 0.0 if reliable else self.t4

    @property
    def timer_l(self) -> float:
        """RFC 6026 §8.7: the INVITE server transaction stays Accepted this long after a 2xx."""
        return 64 * self.t1

    @property
    def timer_m(self) -> float:
        """RFC 6026 §8.4: the INVITE client transaction stays Accepted this long after a 2xx."""
        return 64 * self.t1


class TimerHandle:
    """One scheduled callback; ``cancel()`` makes it a no-op (the heap entry is dropped lazily)."""

    __slots__ = ("callback", "cancelled", "deadline", "name")

    def __init__(self, deadline: float, callback: Callable[[float], None], name: str) -> None:
        self.deadline = deadline
        self.callback = callback
        self.name = name
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __repr__(self) -> str:
        return f"<TimerHandle {self.name} at {self.deadline:.3f}{' cancelled' if self.cancelled else ''}>"


class TimerQueue:
    """A heap of deadlines with lazy cancellation; callbacks receive the ``now`` they fire at.

    Thousands of transactions each holding two or three timers cost one heap entry per timer and no
    event-loop handle: the edge keeps a single ``call_at`` for ``next_deadline()``.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()

    def schedule(self, deadline: float, callback: Callable[[float], None], name: str = "") -> TimerHandle:
        handle = TimerHandle(deadline, callback, name)
        heapq.heappush(self._heap, (deadline, next(self._seq), handle))
        return handle

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def fire(self, now: float) -> int:
        """Run every callback whose deadline is at or before ``now`` (also ones they schedule); count them."""
        fired = 0
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, handle = heapq.heappop(heap)
            if handle.cancelled:
                continue
            handle.cancelled = True
            fired += 1
            handle.callback(now)
        return fired

    def __len__(self) -> int:
        return sum(1 for _, _, h in self._heap if not h.cancelled)
