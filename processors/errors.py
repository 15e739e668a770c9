"""The worker's error tree. Errors are classified where they are raised.

The stream layer only maps these classes to outcomes:

- ``TransientError``: try again later (the retry topic); ``retry_after_ms`` is a
  provider's explicit wish (``Retry-After``) and wins over computed backoff.
- ``PermanentError``: trying again cannot help; dead-letter at once.
- ``PoisonMessage``: the bytes are not a job we understand; dead-letter at once.

``message`` must never contain secrets, OTP codes or link tokens: it travels in
Kafka headers and logs.
"""

from __future__ import annotations


class JobError(Exception):
    """Base class of every classified failure of a job."""

    def __init__(self, message: str, *, error_class: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.error_class = error_class or type(self).__name__


class TransientError(JobError):
    """A failure that may go away: rate limits, 5xx, timeouts, connection errors."""

    def __init__(
        self,
        message: str,
        *,
        error_class: str | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(message, error_class=error_class)
        self.retry_after_ms = retry_after_ms


class RateLimited(TransientError):
    """The provider refused the request for its rate limit; it did nothing with it.

    A sender that keeps a rate budget waits `retry_after_ms` and tries again itself, so a
    rate limit alone costs a job no attempt.
    """


class PermanentError(JobError):
    """A failure that will happen again on every attempt: validation, auth, refusals."""


class PoisonMessage(PermanentError):
    """Input that is not a valid job: not JSON, wrong schema, unknown type, too big."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, error_class=reason)
        self.reason = reason
