"""The email subscribers, one per lane: decode, hand to the email processor, route failures.

Two lanes keep codes ahead of bulk mail. `email-jobs` carries the time-critical types
(SEND_OTP, VERIFICATION_LINK); `email-bulk` carries WELCOME_EMAIL and AD_READY. A bulk
job published on `email-jobs` (by a producer that predates the split) is moved to
`email-bulk` at once, so a burst of welcomes never stands in a code's backlog. Each lane
has its own consumer group, retry and dead-letter topics; both share one send budget, in
which codes go first (`processors.email.outbound`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from faststream.kafka import KafkaRouter
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage

from processors.decoding import UnknownFields
from processors.email.jobs import BULK_TYPES, EmailJob, EmailJobModel, decode_email_job
from streams.broker import raw
from streams.consumed import Consumed, dispatch_options
from streams.dispatch import dispatched_subscriber
from streams.prose import prose
from streams.retry import headers as h
from streams.retry.headers import DLQ_HEADERS_DOC, RETRY_HEADERS_DOC
from streams.retry.middleware import FailureMiddleware
from streams.retry.routing import FailureRouter, JobRoute
from streams.services import EmailProcessor
from streams.settings import Settings
from streams.shares import Assign, PartitionShare
from streams.topics import JobTopics

EMAIL_JOBS_DESCRIPTION = prose("""Time-critical email jobs: `SEND_OTP` and
`VERIFICATION_LINK`. Publish one JSON object per message; `type` selects the email.
`job_id` is the idempotency key: a job is sent at most once, however often it is
delivered. Key the message by recipient address to keep one user's emails in order (and
a newer code after an older one). A code or link is sent only while it is alive: by
`not_after`, or its lifetime counted from the message's timestamp; later it goes to
`email-jobs.dlq` as `expired`. Bulk types (`WELCOME_EMAIL`, `AD_READY`) belong on
`email-bulk`; published here they are moved there. Unknown fields are ignored: fields are
only ever added, and new fields are optional. Invalid messages go to `email-jobs.dlq` with
a reason; transient failures are retried with backoff.""")

EMAIL_BULK_DESCRIPTION = prose("""Bulk email jobs: `WELCOME_EMAIL` and `AD_READY`, same
format as `email-jobs`. They are sent within the provider's budget after every waiting
code and link, so a burst here never delays a sign-in code. Key by recipient address.
Invalid messages go to `email-bulk.dlq` with a reason.""")


@dataclass(frozen=True)
class EmailLane:
    """One email topic's consumer: its group, its jobs in flight, and where bulk jobs go."""

    topics: JobTopics
    group_id: str
    concurrency: int
    description: str
    move_bulk_to: str | None = None


def email_lanes(settings: Settings, critical: JobTopics, bulk: JobTopics) -> tuple[EmailLane, EmailLane]:
    group = settings.kafka.group_id
    return (
        EmailLane(
            critical,
            group_id=group,
            concurrency=settings.email.concurrency,
            description=EMAIL_JOBS_DESCRIPTION,
            move_bulk_to=bulk.main,
        ),
        EmailLane(
            bulk,
            group_id=f"{group}.bulk",
            concurrency=settings.email.bulk_concurrency,
            description=EMAIL_BULK_DESCRIPTION,
        ),
    )


def build_email_router(
    settings: Settings,
    lane: EmailLane,
    processor: EmailProcessor,
    failures: FailureRouter,
    *,
    on_partitions: Assign | None = None,
) -> Consumed:
    """`on_partitions(owned, owners)` is told the lane's partitions this process owns at
    every rebalance (the provider's budget is shared by them)."""
    topics = lane.topics
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
    unknown = UnknownFields()

    async def decode(msg: StreamMessage[Any]) -> EmailJobModel:
        return decode_email_job(msg.body, max_bytes=max_bytes, unknown=unknown)

    share = None if on_partitions is None else PartitionShare(topics.main, on_partitions)
    subscriber = dispatched_subscriber(
        router,
        topics.main,
        options=dispatch_options(settings, concurrency=lane.concurrency),
        group_id=lane.group_id,
        listener=share,
        auto_offset_reset="earliest",
        decoder=decode,
        title=f"{topics.main}:consume",
        description=lane.description,
    )
    if share is not None:
        share.consumer = lambda: subscriber.consumer
    move = None
    if lane.move_bulk_to is not None:
        move = raw(
            router.publisher(
                lane.move_bulk_to,
                title=f"{lane.move_bulk_to}:moved",
                description=f"Bulk email jobs published on `{topics.main}`, moved to their own topic.",
                schema=EmailJob,
            )
        )

    @subscriber
    async def handle_email_job(job: EmailJob, message: KafkaMessage) -> None:
        record = message.raw_message
        headers = h.decode_headers(getattr(record, "headers", None))
        published_ms = h.published_at_ms(headers, getattr(record, "timestamp", None))
        if move is not None and job.type in BULK_TYPES:
            kept = h.carried_over(headers)
            if published_ms is not None:
                kept[h.PUBLISHED_AT_MS] = str(published_ms)
            await move(message.body, getattr(record, "key", None), kept)
            return
        published_at = None if published_ms is None else datetime.fromtimestamp(published_ms / 1000, UTC)
        await processor.process(job, published_at=published_at)

    redeliver = router.publisher(
        topics.redeliver,
        title=f"{topics.redeliver}:redeliver",
        description="Email jobs whose retry is due, back on the topic they are consumed from.",
        schema=EmailJob,
    )
    return Consumed(router, route, raw(redeliver))
