"""The `email-jobs` subscriber: decode, hand to the email processor, route failures."""

from __future__ import annotations

from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaRouter
from faststream.message import StreamMessage

from processors.email.jobs import EmailJob, EmailJobModel, decode_email_job
from streams.prose import prose
from streams.retry import FailureRouter, FailureRouting, JobRoute
from streams.retry.headers import DLQ_HEADERS_DOC, RETRY_HEADERS_DOC
from streams.runtime import runtime
from streams.settings import Settings
from streams.topics import EMAIL_JOBS

EMAIL_JOBS_DESCRIPTION = prose("""Transactional email jobs. Publish one JSON object per
message; `type` selects the email: `SEND_OTP`, `WELCOME_EMAIL`, `VERIFICATION_LINK` or
`AD_READY`. `job_id` is the idempotency key: a job is sent at most once, however often it
is delivered. Key the message by recipient address to keep one user's emails in order. Invalid messages go to
`email-jobs.dlq` with a reason; transient failures are retried with backoff.""")


def build_email_router(settings: Settings, failure_router: FailureRouter, route: JobRoute) -> KafkaRouter:
    router = KafkaRouter(middlewares=[FailureRouting(failure_router, route)])
    max_bytes = settings.max_job_bytes

    async def decode(msg: StreamMessage[Any]) -> EmailJobModel:
        return decode_email_job(msg.body, max_bytes=max_bytes)

    @router.subscriber(
        EMAIL_JOBS.main,
        group_id=settings.kafka_group_id,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=decode,
        title=f"{EMAIL_JOBS.main}:consume",
        description=EMAIL_JOBS_DESCRIPTION,
    )
    async def handle_email_job(job: EmailJob) -> None:
        await runtime.email_processor().process(job)

    router.publisher(
        EMAIL_JOBS.retry,
        title=f"{EMAIL_JOBS.retry}:publish",
        description=(
            "Email jobs waiting for another attempt after a transient failure; the worker "
            "redelivers each to `email-jobs` at its due time. The value is the original job, "
            f"unchanged. Headers: {RETRY_HEADERS_DOC}."
        ),
        schema=EmailJob,
    )
    router.publisher(
        EMAIL_JOBS.dlq,
        title=f"{EMAIL_JOBS.dlq}:publish",
        description=(
            "Email jobs that failed permanently, ran out of attempts, or could not be decoded. "
            f"Headers: {DLQ_HEADERS_DOC} Replay with `python -m streams.cli dlq replay`."
        ),
        schema=EmailJob,
    )
    return router
