"""The `ad-jobs` subscriber: decode, generate copy, publish every outcome on `ad-results`."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaRouter
from faststream.message import StreamMessage
from pydantic import TypeAdapter

from processors.ads.jobs import AdJob, AdResult, DocumentRef
from processors.ads.service import failed_result
from processors.decoding import decode_job
from processors.errors import JobError
from streams.broker import broker
from streams.prose import prose
from streams.retry import FailureRouter, FailureRouting, JobRoute, RawRecord
from streams.retry.headers import DLQ_HEADERS_DOC, RETRY_HEADERS_DOC
from streams.runtime import runtime
from streams.settings import Settings
from streams.topics import AD_JOBS, AD_RESULTS

log = logging.getLogger(__name__)

_AD_JOB: TypeAdapter[AdJob] = TypeAdapter(AdJob)
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

AD_JOBS_DESCRIPTION = prose("""Requests for AI ad copy. `job_id` is the idempotency key: a
job that already succeeded is answered from the store, never sent to the model again. Key the
message by `user_id`. Every outcome, success or permanent failure, is published on
`ad-results`; invalid messages go to `ad-jobs.dlq` with a reason, transient failures (rate
limits, model server errors, timeouts) are retried with backoff.""")

AD_RESULTS_DESCRIPTION = prose("""The outcome of every ad job, keyed by `user_id` so that one
user's results stay in order: the copy when `succeeded`, the reason when `failed`, and a
reference to the stored document. A redelivered job publishes its stored result again, so
consumers should treat `job_id` as idempotent.""")


async def publish_result(result: AdResult) -> None:
    await broker.publish(result, topic=AD_RESULTS, key=result.user_id.encode())


async def publish_failed_result(record: RawRecord, error: JobError, reason: str) -> None:
    """Tell the user about a dead-lettered ad job, when the message says who they are."""
    try:
        job = decode_job(record.value, _AD_JOB, max_bytes=len(record.value))
    except JobError:
        job = None
    if job is not None:
        result = failed_result(job, error)
    else:
        identity = _identity(record.value)
        if identity is None:
            log.warning("dead-lettered ad message %s names no job_id/user_id; no result published", record)
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


def _identity(value: bytes) -> tuple[str, str] | None:
    try:
        data: Any = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    job_id, user_id = data.get("job_id"), data.get("user_id")
    if isinstance(job_id, str) and isinstance(user_id, str) and _ID.match(job_id) and _ID.match(user_id):
        return job_id, user_id
    return None


def build_ads_router(settings: Settings, failure_router: FailureRouter, route: JobRoute) -> KafkaRouter:
    router = KafkaRouter(middlewares=[FailureRouting(failure_router, route)])
    max_bytes = settings.max_job_bytes

    async def decode(msg: StreamMessage[Any]) -> AdJob:
        return decode_job(msg.body, _AD_JOB, max_bytes=max_bytes)

    @router.subscriber(
        AD_JOBS.main,
        group_id=settings.kafka_group_id,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=decode,
        title=f"{AD_JOBS.main}:consume",
        description=AD_JOBS_DESCRIPTION,
    )
    async def handle_ad_job(job: AdJob) -> None:
        result = await runtime.ad_processor().process(job)
        # Published before the offset is committed: a crash here re-reads the job, and
        # the stored result is published again without another model call.
        await publish_result(result)

    router.publisher(
        AD_RESULTS, title=f"{AD_RESULTS}:publish", description=AD_RESULTS_DESCRIPTION, schema=AdResult
    )
    router.publisher(
        AD_JOBS.retry,
        title=f"{AD_JOBS.retry}:publish",
        description=prose(f"""Ad jobs waiting for another attempt after a transient failure;
        the worker redelivers each to `ad-jobs` at its due time. The value is the original job,
        unchanged. Headers: {RETRY_HEADERS_DOC}."""),
        schema=AdJob,
    )
    router.publisher(
        AD_JOBS.dlq,
        title=f"{AD_JOBS.dlq}:publish",
        description=prose(f"""Ad jobs that failed permanently (refusal, copy out of bounds
        after repair, no model configured, ...), ran out of attempts, or could not be decoded.
        Headers: {DLQ_HEADERS_DOC} Replay with `python -m streams.cli dlq replay --topic
        ad-jobs.dlq` once the cause is fixed."""),
        schema=AdJob,
    )
    return router
