"""A seeded network impairment model: loss, bursts, jitter, reordering, duplication (sans-I/O).

One :class:`Impairment` decides the fate of each packet handed to :meth:`Impairment.plan`: dropped (no
delivery), delivered once at a delay, or duplicated (two deliveries). It draws a fixed number of random
numbers per packet, so the same seed gives the same loss pattern whatever the delay settings, and the
same outcomes whether the clock is real (the UDP relay in :mod:`t38.transport`) or virtual (a fax
simulation stepping two engines 20 ms at a time).

Burst loss is a Gilbert-Elliott channel in its simple form: a Good state where packets see only the
independent ``loss``, and a Bad state where every packet is lost; ``burst_len`` is the mean stay in Bad
and ``burst_loss`` the long-run share of packets lost to bursts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Impairment"]


@dataclass
class Impairment:
    """Impairments of one direction of a path; times in ``plan`` are seconds, settings in ms."""

    loss: float = 0.0
    """Probability that a packet is lost independently of the others."""
    burst_loss: float = 0.0
    """Long-run fraction of packets lost in bursts (Gilbert-Elliott Bad state)."""
    burst_len: float = 0.0
    """Mean length of a loss burst, in packets (>= 1 when burst_loss > 0)."""
    jitter_ms: float = 0.0
    """Each delivery is delayed by a uniform extra 0..jitter_ms on top of delay_ms."""
    reorder: float = 0.0
    """Probability that a packet is held back by reorder_ms, so later packets overtake it."""
    duplicate: float = 0.0
    """Probability that a packet is delivered twice (the copy with its own jitter)."""
    seed: int | None = 0
    """Seed of the private random generator; the same seed replays the same fates."""
    delay_ms: float = 0.0
    """Fixed one-way delay."""
    reorder_ms: float = 60.0
    """Extra delay of a reordered packet."""
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _bad: bool = field(init=False, default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("loss", "burst_loss", "reorder", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} is not a probability")
        if self.burst_loss >= 1.0:
            raise ValueError("burst_loss must be below 1")
        if self.burst_loss > 0 and self.burst_len < 1:
            raise ValueError("burst_len must be at least 1 packet when burst_loss is set")
        if min(self.jitter_ms, self.delay_ms, self.reorder_ms) < 0:
            raise ValueError("delays must not be negative")
        self._rng = random.Random(self.seed)

    @property
    def p_enter_burst(self) -> float:
        """Per-packet probability of going Good -> Bad, from the stationary share burst_loss."""
        if self.burst_loss <= 0:
            return 0.0
        leave = 1.0 / self.burst_len
        return min(1.0, leave * self.burst_loss / (1.0 - self.burst_loss))

    def plan(self, now: float, rng: random.Random | None = None) -> list[float]:
        """Delivery times (seconds, same clock as ``now``) for one packet sent at ``now``.

        Empty means lost, two entries mean duplicated. ``rng`` replaces the private generator."""
        r = rng if rng is not None else self._rng
        u_state, u_loss, u_jitter, u_reorder, u_dup, u_dup_jitter = (r.random() for _ in range(6))
        if self._bad:
            self._bad = u_state >= 1.0 / self.burst_len
        else:
            self._bad = u_state < self.p_enter_burst
        if self._bad or u_loss < self.loss:
            return []
        delay = self.delay_ms + u_jitter * self.jitter_ms
        if u_reorder < self.reorder:
            delay += self.reorder_ms
        times = [now + delay / 1000.0]
        if u_dup < self.duplicate:
            times.append(now + (self.delay_ms + u_dup_jitter * self.jitter_ms) / 1000.0)
        return sorted(times)
