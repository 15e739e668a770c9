"""The worker's error tree. Errors are classified where they are raised.

The stream layer only maps these classes to outcomes:

- ``TransientError``: try again later (the retry topic); ``retry_after_ms`` is a
  provider's explicit wish (``Retry-After``) and wins over computed backoff.
- ``PermanentError``: trying again cannot help; dead-letter at once.
- ``PoisonMessage``: the bytes are not a job we understand; dead-letter at once.
- ``Expired``, ``Suppressed``: the job must not be carried out; dead-letter at once.

A permanent error's ``reason`` is the dead letter's `x-dlq-reason`. A job with a
deadline gets it on its error (``deadline_ms``): a retry that would come due after it
is dead-lettered at once as `expired`.

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
        self.deadline_ms: int | None = None
        """The job's deadline (epoch ms), when it has one: no attempt may start after it."""


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

    reason = "permanent"
    """The dead letter's reason."""


class PoisonMessage(PermanentError):
    """Input that is not a valid job: not JSON, wrong schema, unknown type, too big."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, error_class=reason)
        self.reason = reason


class Expired(PermanentError):
    """The job's deadline passed before it could be carried out (a code or link that died)."""

    reason = "expired"


class Suppressed(PermanentError):
    """The recipient is on the suppression list (a hard bounce or a complaint)."""

    reason = "suppressed"
