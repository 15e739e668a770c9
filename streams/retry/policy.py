"""The retry decision: one pure function, `plan_retry(attempt, error, ...)`.

Rules, in this order:
1. a poison message or a permanent error is dead-lettered at once, with its reason;
2. when the attempts are used up, the job is dead-lettered;
3. a provider's explicit `Retry-After` wins over computed backoff;
4. otherwise exponential backoff with full jitter, capped;
5. a retry that would come due after the job's deadline is dead-lettered now, `expired`.
"""

from __future__ import annotations

from dataclasses import dataclass

from processors.errors import Expired, JobError, PermanentError, TransientError

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class BackoffPolicy:
    max_attempts: int = 8
    base_ms: int = 1_000
    multiplier: float = 2.0
    cap_ms: int = 10 * 60_000
    max_retry_after_ms: int = DAY_MS

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_ms < 1 or self.multiplier < 1 or self.cap_ms < 1:
            raise ValueError(f"invalid backoff policy: {self}")

    def ceiling_ms(self, attempt: int) -> int:
        """The largest delay after the `attempt`-th failure (before jitter)."""
        # Compare in float and cap early: multiplier ** attempt overflows quickly.
        exponent = min(attempt - 1, 64)
        return int(min(float(self.cap_ms), self.base_ms * self.multiplier**exponent))


@dataclass(frozen=True)
class RetryIn:
    delay_ms: int


@dataclass(frozen=True)
class DeadLetter:
    reason: str


def plan_retry(
    attempt: int,
    error: JobError,
    policy: BackoffPolicy,
    jitter: float,
    *,
    now_ms: int | None = None,
) -> RetryIn | DeadLetter:
    """Decide what happens after the `attempt`-th failed attempt (1 = the first try failed).

    `jitter` is a number in [0, 1), drawn by the caller, which keeps this function pure.
    `now_ms` (epoch ms) is needed to honour the error's `deadline_ms`.
    """
    if isinstance(error, PermanentError):
        return DeadLetter(error.reason)
    if not isinstance(error, TransientError):
        return DeadLetter(PermanentError.reason)
    if attempt >= policy.max_attempts:
        return DeadLetter("attempts-exhausted")
    if error.retry_after_ms is not None:
        plan = RetryIn(min(max(error.retry_after_ms, 0), policy.max_retry_after_ms))
    else:
        plan = RetryIn(int(jitter * policy.ceiling_ms(attempt)))
    if error.deadline_ms is not None and now_ms is not None and now_ms + plan.delay_ms > error.deadline_ms:
        return DeadLetter(Expired.reason)
    return plan
