"""Retry policy: which outcomes retry, how many times, when, and the 9600 bit/s no-ECM fall-back."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfax.status import T30_ERR_CALLDROPPED, T30_ERR_CANNOT_TRAIN, T30_ERR_FILEERROR, FaxStatus
from vfax.store.options import OPT_ECM, OPT_HEADER, OPT_MAX_BIT_RATE, OPT_TSID
from vfax.store.retry import AttemptResult, RetryPolicy

NOW = 1_800_000_000.0
OPTIONS = {OPT_ECM: True, OPT_MAX_BIT_RATE: 14400, OPT_HEADER: "ACME", OPT_TSID: "+1 555 0100"}
NO_JITTER = RetryPolicy(jitter=0.0)


def test_busy_is_retried_after_60_then_120_seconds_and_fails_on_the_third_attempt() -> None:
    first = NO_JITTER.decide(FaxStatus.FS_BUSY, 1, OPTIONS, now=NOW)
    assert first.retry and first.not_before == NOW + 60
    second = NO_JITTER.decide(FaxStatus.FS_BUSY, 2, OPTIONS, now=NOW)
    assert second.retry and second.not_before == NOW + 120
    third = NO_JITTER.decide(FaxStatus.FS_BUSY, 3, OPTIONS, now=NOW)
    assert not third.retry and third.not_before is None
    assert "3 of 3" in third.reason


def test_last_backoff_step_repeats_when_attempts_outrun_the_schedule() -> None:
    policy = RetryPolicy(jitter=0.0, max_attempts=10)
    assert policy.decide(FaxStatus.FS_NO_ANSWER, 7, {}, now=NOW).not_before == NOW + 300


@pytest.mark.parametrize(
    "status",
    [
        FaxStatus.FS_BUSY,
        FaxStatus.FS_NO_ANSWER,
        FaxStatus.FS_LINE_UNAVAILABLE,
        FaxStatus.FS_NO_DIAL_TONE,
        FaxStatus.FS_DISCONNECTED,
    ],
)
def test_transient_failures_are_retried(status: FaxStatus) -> None:
    assert NO_JITTER.decide(status, 1, OPTIONS, now=NOW).retry


@pytest.mark.parametrize(
    "status",
    [
        FaxStatus.FS_COMPLETED,
        FaxStatus.FS_BAD_ADDRESS,
        FaxStatus.FS_USER_ABORT,
        FaxStatus.FS_CALL_BLACKLISTED,
        FaxStatus.FS_CALL_DELAYED,
        FaxStatus.FS_NOT_FAX_CALL,
        FaxStatus.FS_HANDLED,
    ],
)
def test_final_outcomes_are_never_retried_even_in_the_fax_phase(status: FaxStatus) -> None:
    decision = NO_JITTER.decide(status, 1, OPTIONS, now=NOW, fax_phase=True)
    assert not decision.retry
    assert decision.next_options == OPTIONS


def test_fatal_error_is_retried_only_when_it_happened_in_the_fax_phase() -> None:
    assert not NO_JITTER.decide(FaxStatus.FS_FATAL_ERROR, 1, OPTIONS, now=NOW).retry
    assert NO_JITTER.decide(FaxStatus.FS_FATAL_ERROR, 1, OPTIONS, now=NOW, fax_phase=True).retry


def test_fax_phase_failure_falls_back_to_9600_without_ecm_and_keeps_other_options() -> None:
    decision = NO_JITTER.decide(FaxStatus.FS_FATAL_ERROR, 1, OPTIONS, now=NOW, fax_phase=True)
    assert decision.next_options == {**OPTIONS, OPT_ECM: False, OPT_MAX_BIT_RATE: 9600}
    assert decision.fax_failures == 1
    assert "9600 bit/s" in decision.reason
    assert OPTIONS[OPT_MAX_BIT_RATE] == 14400  # the caller's mapping is not touched


def test_busy_does_not_trigger_the_fall_back() -> None:
    for attempt in (1, 2):
        decision = NO_JITTER.decide(FaxStatus.FS_BUSY, attempt, OPTIONS, now=NOW)
        assert decision.next_options == OPTIONS
        assert decision.fax_failures == 0


def test_fall_back_waits_for_the_configured_number_of_fax_phase_failures() -> None:
    policy = RetryPolicy(jitter=0.0, fallback_after=2, max_attempts=5)
    first = policy.decide(FaxStatus.FS_DISCONNECTED, 1, OPTIONS, now=NOW, fax_phase=True)
    assert first.next_options == OPTIONS and first.fax_failures == 1
    second = policy.decide(
        FaxStatus.FS_DISCONNECTED, 2, first.next_options, now=NOW, fax_phase=True, fax_failures=1
    )
    assert second.next_options[OPT_MAX_BIT_RATE] == 9600 and second.next_options[OPT_ECM] is False


def test_busy_after_an_earlier_fax_phase_failure_keeps_the_fall_back() -> None:
    decision = NO_JITTER.decide(FaxStatus.FS_BUSY, 2, OPTIONS, now=NOW, fax_failures=1)
    assert decision.next_options[OPT_MAX_BIT_RATE] == 9600


def test_fall_back_never_raises_a_lower_bit_rate() -> None:
    decision = NO_JITTER.decide(
        FaxStatus.FS_FATAL_ERROR, 1, {OPT_MAX_BIT_RATE: 4800, OPT_ECM: True}, now=NOW, fax_phase=True
    )
    assert decision.next_options == {OPT_MAX_BIT_RATE: 4800, OPT_ECM: False}


def test_jitter_is_reproducible_with_a_seed_and_bounded() -> None:
    policy = RetryPolicy(jitter=0.1)
    a = policy.decide(FaxStatus.FS_BUSY, 1, {}, now=NOW, rng=random.Random(7))
    b = policy.decide(FaxStatus.FS_BUSY, 1, {}, now=NOW, rng=random.Random(7))
    c = policy.decide(FaxStatus.FS_BUSY, 1, {}, now=NOW, rng=random.Random(8))
    assert a.not_before == b.not_before
    assert a.not_before != c.not_before
    for seed in range(200):
        d = policy.decide(FaxStatus.FS_BUSY, 1, {}, now=NOW, rng=random.Random(seed))
        assert d.not_before is not None and NOW + 54 <= d.not_before <= NOW + 66


def test_job_max_attempts_overrides_the_policy() -> None:
    assert not NO_JITTER.decide(FaxStatus.FS_BUSY, 1, {}, now=NOW, max_attempts=1).retry
    assert NO_JITTER.decide(FaxStatus.FS_BUSY, 4, {}, now=NOW, max_attempts=5).retry


def test_custom_retry_set_is_honoured() -> None:
    policy = RetryPolicy(jitter=0.0, retry_on=frozenset({FaxStatus.FS_NOT_FAX_CALL}))
    assert policy.decide(FaxStatus.FS_NOT_FAX_CALL, 1, {}, now=NOW).retry
    assert not policy.decide(FaxStatus.FS_BUSY, 1, {}, now=NOW).retry


def test_attempt_result_derives_the_fax_phase_from_the_t30_code() -> None:
    trained = AttemptResult(FaxStatus.FS_FATAL_ERROR, t30_code=T30_ERR_CANNOT_TRAIN)
    dropped = AttemptResult(FaxStatus.FS_DISCONNECTED, pages=1, t30_code=T30_ERR_CALLDROPPED)
    tiff = AttemptResult(FaxStatus.FS_FATAL_ERROR, t30_code=T30_ERR_FILEERROR)
    sip = AttemptResult(FaxStatus.FS_BUSY, sip_code=486)
    assert trained.failed_in_fax_phase and dropped.failed_in_fax_phase
    assert not tiff.failed_in_fax_phase and not sip.failed_in_fax_phase
    assert AttemptResult(FaxStatus.FS_DISCONNECTED, fax_phase=True).failed_in_fax_phase
    assert not AttemptResult(FaxStatus.FS_COMPLETED, pages=2, fax_phase=True).failed_in_fax_phase


def test_attempt_result_refuses_a_progress_status() -> None:
    with pytest.raises(ValueError, match="FS_TRANSMITTING"):
        AttemptResult(FaxStatus.FS_TRANSMITTING)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"backoff": ()}, {"backoff": (-1.0,)}, {"jitter": 1.0}, {"fallback_after": 0}],
)
def test_nonsense_policy_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_decide_refuses_attempt_zero_and_progress_statuses() -> None:
    with pytest.raises(ValueError, match="1-based"):
        NO_JITTER.decide(FaxStatus.FS_BUSY, 0, {}, now=NOW)
    with pytest.raises(ValueError, match="FS_DIALING"):
        NO_JITTER.decide(FaxStatus.FS_DIALING, 1, {}, now=NOW)


@given(
    status=st.sampled_from([s for s in FaxStatus if s.is_terminal]),
    attempt=st.integers(1, 20),
    max_attempts=st.integers(1, 10),
    fax_phase=st.booleans(),
    fax_failures=st.integers(0, 5),
    seed=st.integers(0, 2**32),
)
@settings(max_examples=400, deadline=None)
def test_decide_invariants(
    status: FaxStatus, attempt: int, max_attempts: int, fax_phase: bool, fax_failures: int, seed: int
) -> None:
    policy = RetryPolicy()
    d = policy.decide(
        status,
        attempt,
        OPTIONS,
        now=NOW,
        fax_phase=fax_phase,
        fax_failures=fax_failures,
        max_attempts=max_attempts,
        rng=random.Random(seed),
    )
    if d.retry:
        assert attempt < max_attempts
        assert not status.is_success
        assert d.not_before is not None and d.not_before >= NOW
    else:
        assert d.not_before is None and d.next_options == OPTIONS
    assert {k: v for k, v in d.next_options.items() if k not in (OPT_ECM, OPT_MAX_BIT_RATE)} == {
        OPT_HEADER: "ACME",
        OPT_TSID: "+1 555 0100",
    }
    assert d.next_options[OPT_MAX_BIT_RATE] <= OPTIONS[OPT_MAX_BIT_RATE]
    assert d.fax_failures in (fax_failures, fax_failures + 1)


def test_completed_without_a_page_is_not_an_attempt_result() -> None:
    with pytest.raises(ValueError, match="at least one page"):
        AttemptResult(FaxStatus.FS_COMPLETED, pages=0)
