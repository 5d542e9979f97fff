"""Retry policy for outbound faxes: which outcomes are retried, how often, how late, and how slowly.

A pure function of its inputs (no clock, no global random state), so the job store and the tests can call
it with any ``now`` and a seeded ``random.Random``.

Rules (defaults of :class:`RetryPolicy`, every one a field you can change):

- Never retried: ``FS_COMPLETED`` (done), ``FS_BAD_ADDRESS``, ``FS_CALL_BLACKLISTED``, ``FS_USER_ABORT``
  (the Windows Fax Service does not retry these three either, see the ``FAX_DEV_STATUS`` documentation),
  ``FS_CALL_DELAYED`` (by definition the dialing rules forbid another try), ``FS_NOT_FAX_CALL`` (a person
  answered: calling them again and again is harassment) and ``FS_HANDLED``.
- Retried: ``FS_BUSY``, ``FS_NO_ANSWER``, ``FS_LINE_UNAVAILABLE``, ``FS_NO_DIAL_TONE``,
  ``FS_DISCONNECTED``; ``FS_FATAL_ERROR`` only when it happened in the fax phase (after training
  started: line quality), not for a refused SIP offer, a broken TIFF or a negotiation refusal.
- At most ``max_attempts`` attempts in all (3); the job's own ``max_attempts`` overrides it.
- Back-off: ``backoff[attempt - 1]`` seconds (the last entry repeats), stretched or shrunk by up to
  ``jitter`` (a fraction, default 10 %) drawn from the ``rng`` the caller passes (seed it in tests).
- Fall-back, as field-proven fax servers do: once ``fallback_after`` attempts have failed *in the fax
  phase* (training or page transfer failed; a busy line does not count), the next attempts run with
  ``max_bit_rate`` lowered to 9600 bit/s and ECM off. A lower bit rate already set is kept.

The options dictionary is the job's (names in :mod:`vfax.store.options`, the vocabulary the controller reads);
this module only reads and lowers :data:`OPT_ECM` and :data:`OPT_MAX_BIT_RATE` and copies the rest unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vfax.status import FaxStatus, is_fax_phase_failure
from vfax.store.options import OPT_ECM, OPT_MAX_BIT_RATE

FALLBACK_BITRATE = 9600

DEFAULT_RETRY_ON: frozenset[FaxStatus] = frozenset(
    {
        FaxStatus.FS_BUSY,
        FaxStatus.FS_NO_ANSWER,
        FaxStatus.FS_LINE_UNAVAILABLE,
        FaxStatus.FS_NO_DIAL_TONE,
        FaxStatus.FS_DISCONNECTED,
    }
)

#: Retried only when the failure happened in the fax phase.
DEFAULT_RETRY_IN_FAX_PHASE: frozenset[FaxStatus] = frozenset({FaxStatus.FS_FATAL_ERROR})


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """How one attempt ended, as the device reports it to the controller.

    ``fax_phase`` says the failure happened after the T.30 session started training or sending pages;
    when it is None it is derived from ``t30_code`` (:func:`vfax.status.is_fax_phase_failure`).
    """

    status: FaxStatus
    pages: int = 0
    error: str = ""
    sip_code: int | None = None
    t30_code: int | None = None
    fax_phase: bool | None = None

    def __post_init__(self) -> None:
        if not self.status.is_terminal:
            raise ValueError(f"an attempt ends with a terminal status, not {self.status.name}")
        if self.pages < 0:
            raise ValueError(f"pages must be >= 0, got {self.pages}")
        if self.status.is_success and self.pages == 0:
            # a "completed" fax without a page delivered nothing: never report that as success
            raise ValueError("FS_COMPLETED needs at least one page sent")

    @property
    def failed_in_fax_phase(self) -> bool:
        if self.status is FaxStatus.FS_COMPLETED:
            return False
        if self.fax_phase is not None:
            return self.fax_phase
        return self.t30_code is not None and is_fax_phase_failure(self.t30_code)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after an attempt.

    ``retry``: queue the job again, not before ``not_before`` (Unix time), with ``next_options``.
    Without a retry, ``not_before`` is None and ``next_options`` are the options unchanged.
    ``fax_failures`` is the updated count of fax-phase failures to store with the job.
    ``reason`` is a short human sentence for the log and the event payload.
    """

    retry: bool
    not_before: float | None
    next_options: dict[str, Any]
    fax_failures: int
    reason: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retry_on: frozenset[FaxStatus] = DEFAULT_RETRY_ON
    retry_in_fax_phase: frozenset[FaxStatus] = DEFAULT_RETRY_IN_FAX_PHASE
    max_attempts: int = 3
    backoff: tuple[float, ...] = (60.0, 120.0, 300.0)
    jitter: float = 0.1
    fallback_after: int = 1
    fallback_bitrate: int = FALLBACK_BITRATE
    fallback_ecm: bool = False

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not self.backoff or any(b < 0 for b in self.backoff):
            raise ValueError(f"backoff must be a non-empty tuple of delays >= 0, got {self.backoff!r}")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if self.fallback_after < 1:
            raise ValueError(f"fallback_after must be >= 1, got {self.fallback_after}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = self.backoff[min(max(attempt, 1), len(self.backoff)) - 1]
        if self.jitter and rng is not None:
            base *= 1.0 + rng.uniform(-self.jitter, self.jitter)
        return base

    def is_retryable(self, status: FaxStatus, *, fax_phase: bool = False) -> bool:
        if status in self.retry_on:
            return True
        return fax_phase and status in self.retry_in_fax_phase

    def decide(
        self,
        status: FaxStatus,
        attempt: int,
        options: Mapping[str, Any],
        *,
        now: float,
        fax_phase: bool = False,
        fax_failures: int = 0,
        max_attempts: int | None = None,
        rng: random.Random | None = None,
    ) -> Decision:
        """Decide after attempt number ``attempt`` (1-based, this one included) ended with ``status``.

        ``fax_failures`` counts the earlier attempts that failed in the fax phase; ``fax_phase`` says
        whether this one did. ``rng`` supplies the jitter (None: no jitter).
        """
        if attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt}")
        if not status.is_terminal:
            raise ValueError(f"cannot decide on a non-terminal status {status.name}")
        failures = fax_failures + (1 if fax_phase and not status.is_success else 0)
        limit = self.max_attempts if max_attempts is None else max_attempts
        unchanged = dict(options)
        if status.is_success:
            return Decision(False, None, unchanged, failures, "completed")
        if not self.is_retryable(status, fax_phase=fax_phase):
            return Decision(False, None, unchanged, failures, f"{status.string_id} is not retried")
        if attempt >= limit:
            return Decision(
                False, None, unchanged, failures, f"{status.string_id} after {attempt} of {limit} attempts"
            )
        next_options = self._fallback(unchanged) if failures >= self.fallback_after else unchanged
        wait = self.delay(attempt, rng)
        reason = f"{status.string_id}: retry {attempt + 1} of {limit} in {wait:.0f} s"
        if next_options != unchanged:
            reason += (
                f" at {next_options[OPT_MAX_BIT_RATE]} bit/s, ECM {'on' if next_options[OPT_ECM] else 'off'}"
            )
        return Decision(True, now + wait, next_options, failures, reason)

    def _fallback(self, options: dict[str, Any]) -> dict[str, Any]:
        lowered = dict(options)
        current = options.get(OPT_MAX_BIT_RATE)
        if not isinstance(current, int) or current > self.fallback_bitrate:
            lowered[OPT_MAX_BIT_RATE] = self.fallback_bitrate
        lowered[OPT_ECM] = self.fallback_ecm
        return lowered
