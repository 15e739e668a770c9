"""The retry plan: its order of rules, and the bounds of the randomised delay."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from processors.errors import Expired, PermanentError, PoisonMessage, Suppressed, TransientError
from streams.retry.policy import DAY_MS, BackoffPolicy, DeadLetter, RetryIn, plan_retry

policies = st.builds(
    BackoffPolicy,
    max_attempts=st.integers(1, 50),
    base_ms=st.integers(1, 60_000),
    multiplier=st.floats(1.0, 10.0),
    cap_ms=st.integers(1, 24 * 3_600_000),
)
jitters = st.floats(0.0, 1.0, exclude_max=True)
TRANSIENT = TransientError("503", error_class="Resend503")


@given(policy=policies, attempt=st.integers(1, 200), jitter=jitters)
def test_computed_delay_is_within_zero_and_the_capped_exponential(
    policy: BackoffPolicy, attempt: int, jitter: float
) -> None:
    plan = plan_retry(attempt, TRANSIENT, policy, jitter)
    if attempt >= policy.max_attempts:
        assert plan == DeadLetter("attempts-exhausted")
        return
    assert isinstance(plan, RetryIn)
    ceiling = min(policy.cap_ms, policy.base_ms * policy.multiplier ** (attempt - 1))
    assert 0 <= plan.delay_ms <= ceiling
    assert plan.delay_ms <= policy.cap_ms


@given(policy=policies, attempt=st.integers(1, 30))
def test_ceiling_never_shrinks_as_attempts_grow(policy: BackoffPolicy, attempt: int) -> None:
    assert policy.ceiling_ms(attempt) <= policy.ceiling_ms(attempt + 1) <= policy.cap_ms


@given(policy=policies, attempt=st.integers(1, 200), jitter=jitters)
def test_permanent_errors_and_poison_never_retry(policy: BackoffPolicy, attempt: int, jitter: float) -> None:
    assert plan_retry(attempt, PermanentError("422"), policy, jitter) == DeadLetter("permanent")
    assert plan_retry(attempt, PoisonMessage("schema", "bad"), policy, jitter) == DeadLetter("schema")


@given(
    policy=policies, attempt=st.integers(1, 200), jitter=jitters, retry_after_ms=st.integers(0, 10 * DAY_MS)
)
def test_retry_after_wins_over_backoff_but_is_bounded(
    policy: BackoffPolicy, attempt: int, jitter: float, retry_after_ms: int
) -> None:
    error = TransientError("429", retry_after_ms=retry_after_ms)
    plan = plan_retry(attempt, error, policy, jitter)
    if attempt >= policy.max_attempts:
        assert isinstance(plan, DeadLetter)
    else:
        assert plan == RetryIn(min(retry_after_ms, policy.max_retry_after_ms))


def test_full_jitter_spans_the_whole_range() -> None:
    policy = BackoffPolicy(max_attempts=10, base_ms=1_000, multiplier=2.0, cap_ms=60_000)
    assert plan_retry(3, TRANSIENT, policy, 0.0) == RetryIn(0)
    assert plan_retry(3, TRANSIENT, policy, 0.999_999) == RetryIn(3_999)
    assert plan_retry(20, TRANSIENT, policy, 0.5) == DeadLetter("attempts-exhausted")
    assert plan_retry(9, TRANSIENT, policy, 0.5) == RetryIn(30_000)


def test_expired_and_suppressed_jobs_are_dead_lettered_with_their_reason() -> None:
    policy = BackoffPolicy()
    assert plan_retry(1, Expired("too late"), policy, 0.5) == DeadLetter("expired")
    assert plan_retry(1, Suppressed("bounced"), policy, 0.5) == DeadLetter("suppressed")


def deadlined(deadline_ms: int, retry_after_ms: int | None = None) -> TransientError:
    error = TransientError("503", error_class="Resend503", retry_after_ms=retry_after_ms)
    error.deadline_ms = deadline_ms
    return error


@given(
    policy=policies,
    attempt=st.integers(1, 49),
    jitter=jitters,
    now_ms=st.integers(0, 10**13),
    left_ms=st.integers(-(10**6), 10**9),
)
def test_a_retry_never_comes_due_after_the_jobs_deadline(
    policy: BackoffPolicy, attempt: int, jitter: float, now_ms: int, left_ms: int
) -> None:
    error = deadlined(now_ms + left_ms)
    plan = plan_retry(attempt, error, policy, jitter, now_ms=now_ms)
    undated = plan_retry(attempt, TransientError("503", error_class="Resend503"), policy, jitter)
    if isinstance(undated, DeadLetter):
        assert plan == undated
    elif undated.delay_ms > left_ms:
        assert plan == DeadLetter("expired")
    else:
        assert plan == undated


def test_a_retry_after_beyond_the_deadline_dead_letters_now() -> None:
    plan = plan_retry(1, deadlined(1_000 + 30_000, retry_after_ms=60_000), BackoffPolicy(), 0.0, now_ms=1_000)
    assert plan == DeadLetter("expired")
