"""When an email job stops being worth sending: its deadline.

A code or a link that reaches the user after it died only makes them type a dead code.
A job's `not_after` wins; a SEND_OTP or VERIFICATION_LINK without one lives as long as
its code or link, counted from when the job was first published.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from processors.email.jobs import EmailJobModel, SendOtpJob, VerificationLinkJob


def deadline(job: EmailJobModel, published_at: datetime | None) -> datetime | None:
    """The time after which `job` must not be sent; None if it has none."""
    if job.not_after is not None:
        return job.not_after
    if published_at is None:
        return None
    if isinstance(job, SendOtpJob):
        return published_at + timedelta(minutes=job.expires_in_minutes)
    if isinstance(job, VerificationLinkJob):
        return published_at + timedelta(hours=job.expires_in_hours)
    return None
