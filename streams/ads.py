"""The `ad-jobs` subscriber: decode, generate copy, publish every outcome on `ad-results`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from faststream.kafka import KafkaRouter
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage
from pydantic import TypeAdapter

from processors.ads.jobs import AdJob, AdResult, DocumentRef
from processors.decoding import decode_job, json_object
from processors.errors import JobError
from processors.ids import is_job_id
from streams.broker import raw
from streams.consumed import Consumed, dispatch_options
from streams.dispatch import dispatched_subscriber
from streams.prose import prose
from streams.retry import headers as h
from streams.retry.headers import DLQ_HEADERS_DOC, RETRY_HEADERS_DOC
from streams.retry.middleware import FailureMiddleware
from streams.retry.record import RawRecord
from streams.retry.routing import FailureRouter, JobRoute
from streams.services import AdProcessor
from streams.settings import Settings
from streams.shares import Assign, PartitionShare
from streams.topics import JobTopics

log = logging.getLogger(__name__)

_AD_JOB: TypeAdapter[AdJob] = TypeAdapter(AdJob)

AD_JOBS_DESCRIPTION = prose("""Requests for AI ad copy. `job_id` is the idempotency key: a
job ends in one final state (`succeeded`, `failed` or `dead-lettered`), and a job that has
one is answered from the store, never sent to the model again; only a replay from
`ad-jobs.dlq` (marked with the `x-replayed-from` header) runs it again. Key the message by
`user_id`. Every outcome, success or failure, is published on `ad-results`; invalid
messages go to `ad-jobs.dlq` with a reason, transient failures (rate limits, model server
errors, timeouts) are retried with backoff.""")

AD_RESULTS_DESCRIPTION = prose("""The outcome of every ad job, keyed by `user_id` so that one
user's results stay in order: the copy when `succeeded`, the reason when `failed`, and a
reference to the stored document. A redelivered job publishes its stored result again, so
consumers should treat `job_id` as idempotent.""")

PublishResult = Callable[[AdResult], Awaitable[None]]


def failed_result_hook(
    publish_result: PublishResult, processor: AdProcessor
) -> Callable[[RawRecord, JobError, str], Awaitable[None]]:
    """Record a dead-lettered ad job's final state and tell the user, when the message says
    who they are.

    Runs before the dead letter is written. Idempotent: the processor records a job's
    final state once, and the result is keyed by `job_id`, and consumers treat it so.
    """

    async def on_dead_letter(record: RawRecord, error: JobError, reason: str) -> None:
        try:
            job = decode_job(record.value, _AD_JOB, max_bytes=len(record.value))
        except JobError:
            job = None
        if job is not None:
            result = await processor.conclude(job, error, reason, replay=record.headers.get(h.REPLAYED_FROM))
        else:
            identity = _identity(record.value)
            if identity is None:
                log.warning(
                    "dead-lettered ad message %s names no job_id/user_id; no result published", record
                )
                return
            job_id, user_id = identity
            result = AdResult(
                job_id=job_id,
                user_id=user_id,
                status="failed",
                error=f"{reason}: {error.message}",
                error_class=error.error_class,
                document=DocumentRef(id=job_id),
                completed_at=datetime.now(UTC),
            )
        await publish_result(result)

    return on_dead_letter


def _identity(value: bytes) -> tuple[str, str] | None:
    data = json_object(value)
    if data is None:
        return None
    job_id, user_id = data.get("job_id"), data.get("user_id")
    if isinstance(job_id, str) and isinstance(user_id, str) and is_job_id(job_id) and is_job_id(user_id):
        return job_id, user_id
    return None


def ads_group_id(group_id: str) -> str:
    """The consumer group of `ad-jobs`: `<KAFKA_GROUP_ID>.ads`."""
    return f"{group_id}.ads"


def build_ads_router(
    settings: Settings,
    topics: JobTopics,
    results_topic: str,
    processor: AdProcessor,
    failures: FailureRouter,
    *,
    on_partitions: Assign | None = None,
) -> Consumed:
    """`on_partitions(owned, owners)` is told the `ad-jobs` partitions this process owns at
    every rebalance (the model's rate budget is shared by them)."""
    router = KafkaRouter()
    results = router.publisher(
        results_topic, title=f"{results_topic}:publish", description=AD_RESULTS_DESCRIPTION, schema=AdResult
    )

    async def publish_result(result: AdResult) -> None:
        await results.publish(result, key=result.user_id.encode())

    retry = router.publisher(
        topics.retry,
        title=f"{topics.retry}:publish",
        description=prose(f"""Ad jobs waiting for another attempt after a transient failure;
        the worker redelivers each to `ad-jobs` at its due time. The value is the original job,
        unchanged. Headers: {RETRY_HEADERS_DOC}."""),
        schema=AdJob,
    )
    dead_letter = router.publisher(
        topics.dlq,
        title=f"{topics.dlq}:publish",
        description=prose(f"""Ad jobs that failed permanently (refusal, copy out of bounds
        after repair, no model configured, ...), ran out of attempts, or could not be decoded.
        Headers: {DLQ_HEADERS_DOC} Replay with `python -m streams.cli dlq replay --topic
        ad-jobs.dlq` once the cause is fixed."""),
        schema=AdJob,
    )
    route = JobRoute(
        topics,
        settings.ad_retry.policy(),
        retry=raw(retry),
        dead_letter=raw(dead_letter),
        on_dead_letter=failed_result_hook(publish_result, processor),
    )
    router.add_middleware(FailureMiddleware(failures, route))
    max_bytes = settings.worker.max_job_bytes

    async def decode(msg: StreamMessage[Any]) -> AdJob:
        return decode_job(msg.body, _AD_JOB, max_bytes=max_bytes)

    share = None if on_partitions is None else PartitionShare(topics.main, on_partitions)
    subscriber = dispatched_subscriber(
        router,
        topics.main,
        options=dispatch_options(settings, concurrency=settings.ads.concurrency),
        # A group of its own: in the email consumers' group, every start or stop of an ad
        # consumer would rebalance the email partitions too, and cut their sends short.
        group_id=ads_group_id(settings.kafka.group_id),
        listener=share,
        auto_offset_reset="earliest",
        decoder=decode,
        title=f"{topics.main}:consume",
        description=AD_JOBS_DESCRIPTION,
    )
    if share is not None:
        share.consumer = lambda: subscriber.consumer

    @subscriber
    async def handle_ad_job(job: AdJob, message: KafkaMessage) -> None:
        headers = h.decode_headers(getattr(message.raw_message, "headers", None))
        result = await processor.process(job, replay=headers.get(h.REPLAYED_FROM))
        # Published before the offset is committed: a crash here re-reads the job, and
        # the stored result is published again without another model call.
        await publish_result(result)

    redeliver = router.publisher(
        topics.redeliver,
        title=f"{topics.redeliver}:redeliver",
        description="Ad jobs whose retry is due, back on the topic they are consumed from.",
        schema=AdJob,
    )
    return Consumed(router, route, raw(redeliver))
