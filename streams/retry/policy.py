"""The retry decision: one pure function, `plan_retry(attempt, error, ...)`.

Rules, in this order:
1. a poison message or a permanent error is dead-lettered at once;
2. when the attempts are used up, the job is dead-lettered;
3. a provider's explicit `Retry-After` wins over computed backoff;
4. otherwise exponential backoff with full jitter, capped.
"""

from __future__ import annotations

from dataclasses import dataclass

from processors.errors import JobError, PermanentError, PoisonMessage, TransientError

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


def plan_retry(attempt: int, error: JobError, policy: BackoffPolicy, jitter: float) -> RetryIn | DeadLetter:
    """Decide what happens after the `attempt`-th failed attempt (1 = the first try failed).

    `jitter` is a number in [0, 1), drawn by the caller, which keeps this function pure.
    """
    if isinstance(error, PoisonMessage):
        return DeadLetter(error.reason)
    if isinstance(error, PermanentError) or not isinstance(error, TransientError):
        return DeadLetter("permanent")
    if attempt >= policy.max_attempts:
        return DeadLetter("attempts-exhausted")
    if error.retry_after_ms is not None:
        return RetryIn(min(max(error.retry_after_ms, 0), policy.max_retry_after_ms))
    return RetryIn(int(jitter * policy.ceiling_ms(attempt)))
