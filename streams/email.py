"""The `email-jobs` subscriber: decode, hand to the email processor, route failures."""

from __future__ import annotations

from typing import Any

from faststream.kafka import KafkaRouter
from faststream.message import StreamMessage

from processors.email.jobs import EmailJob, EmailJobModel, decode_email_job
from streams.broker import raw
from streams.consumed import Consumed, dispatch_options
from streams.dispatch import dispatched_subscriber
from streams.prose import prose
from streams.retry.headers import DLQ_HEADERS_DOC, RETRY_HEADERS_DOC
from streams.retry.middleware import FailureMiddleware
from streams.retry.routing import FailureRouter, JobRoute
from streams.services import EmailProcessor
from streams.settings import Settings
from streams.shares import Assign, PartitionShare
from streams.topics import JobTopics

EMAIL_JOBS_DESCRIPTION = prose("""Transactional email jobs. Publish one JSON object per
message; `type` selects the email: `SEND_OTP`, `WELCOME_EMAIL`, `VERIFICATION_LINK` or
`AD_READY`. `job_id` is the idempotency key: a job is sent at most once, however often it
is delivered. Key the message by recipient address to keep one user's emails in order. Invalid messages go to
`email-jobs.dlq` with a reason; transient failures are retried with backoff.""")


def build_email_router(
    settings: Settings,
    topics: JobTopics,
    processor: EmailProcessor,
    failures: FailureRouter,
    *,
    on_partitions: Assign | None = None,
) -> Consumed:
    """`on_partitions(owned, owners)` is told the `email-jobs` partitions this process owns
    at every rebalance (the provider's budget is shared by them)."""
    router = KafkaRouter()
    retry = router.publisher(
        topics.retry,
        title=f"{topics.retry}:publish",
        description=(
            "Email jobs waiting for another attempt after a transient failure; the worker "
            "redelivers each to `email-jobs` at its due time. The value is the original job, "
            f"unchanged. Headers: {RETRY_HEADERS_DOC}."
        ),
        schema=EmailJob,
    )
    route = JobRoute(
        topics,
        settings.email_retry.policy(),
        retry=raw(retry),
        dead_letter=raw(
            router.publisher(
                topics.dlq,
                title=f"{topics.dlq}:publish",
                description=(
                    "Email jobs that failed permanently, ran out of attempts, or could not be decoded. "
                    f"Headers: {DLQ_HEADERS_DOC} Replay with `python -m streams.cli dlq replay`."
                ),
                schema=EmailJob,
            )
        ),
    )
    router.add_middleware(FailureMiddleware(failures, route))
    max_bytes = settings.worker.max_job_bytes

    async def decode(msg: StreamMessage[Any]) -> EmailJobModel:
        return decode_email_job(msg.body, max_bytes=max_bytes)

    share = None if on_partitions is None else PartitionShare(topics.main, on_partitions)
    subscriber = dispatched_subscriber(
        router,
        topics.main,
        options=dispatch_options(settings, concurrency=settings.email.concurrency),
        group_id=settings.kafka.group_id,
        listener=share,
        auto_offset_reset="earliest",
        decoder=decode,
        title=f"{topics.main}:consume",
        description=EMAIL_JOBS_DESCRIPTION,
    )
    if share is not None:
        share.consumer = lambda: subscriber.consumer

    @subscriber
    async def handle_email_job(job: EmailJob) -> None:
        await processor.process(job)

    redeliver = router.publisher(
        topics.redeliver,
        title=f"{topics.redeliver}:redeliver",
        description="Email jobs whose retry is due, back on the topic they are consumed from.",
        schema=EmailJob,
    )
    return Consumed(router, route, raw(redeliver))
