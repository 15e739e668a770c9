"""The email notifier: an `ad-results` subscriber that asks for an AD_READY email.

It never sends email itself: it publishes an `AD_READY` job on `email-bulk`, so the email
path's retries, dead letters and ledger apply. The email job's id derives from the ad
job's id, so a result delivered twice still makes one email.

Results it can't handle get the same failure policy as the job topics, with topics of
its own consumer group: `ad-results.email-notifier.retry` and `.dlq`. A due retry comes
back on `ad-results.email-notifier`, which only this notifier reads, so the other
consumers of `ad-results` never see it twice.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaRouter
from faststream.message import StreamMessage
from pydantic import TypeAdapter

from processors.ads.jobs import AdResult
from processors.decoding import decode_job
from processors.email.jobs import AdReadyJob
from streams.broker import raw
from streams.consumed import Consumed
from streams.prose import prose
from streams.retry.headers import DLQ_HEADERS_DOC, RETRY_HEADERS_DOC
from streams.retry.middleware import FailureMiddleware
from streams.retry.routing import FailureRouter, JobRoute
from streams.settings import Settings
from streams.topics import EMAIL_NOTIFIER, JobTopics

log = logging.getLogger(__name__)

_AD_RESULT: TypeAdapter[AdResult] = TypeAdapter(AdResult)


def ad_ready_email(result: AdResult) -> AdReadyJob | None:
    """The email job for a result, or None when the user did not ask for email."""
    if result.status != "succeeded" or not result.variants or result.notify is None:
        return None
    if result.notify.email is None or result.product_name is None or result.platform is None:
        return None
    job_id = f"ad-ready-{result.job_id}"
    if len(job_id) > 128:
        job_id = "ad-ready-" + hashlib.sha256(result.job_id.encode()).hexdigest()[:40]
    return AdReadyJob(
        type="AD_READY",
        job_id=job_id,
        to=result.notify.email,
        product_name=result.product_name,
        platform=str(result.platform),
        headlines=[variant.headline for variant in result.variants],
        ad_job_id=result.job_id,
    )


def build_email_notifier_router(
    settings: Settings, topics: JobTopics, email_bulk: str, failures: FailureRouter
) -> Consumed:
    router = KafkaRouter()
    emails = router.publisher(
        email_bulk,
        title=f"{email_bulk}:ad-ready",
        description="AD_READY email jobs published by the email notifier.",
        schema=AdReadyJob,
    )
    retry = router.publisher(
        topics.retry,
        title=f"{topics.retry}:publish",
        description=prose(f"""Ad results the email notifier could not handle yet; it reads
        each again from `{topics.redeliver}` at its due time. The value is the original result,
        unchanged. Headers: {RETRY_HEADERS_DOC}."""),
        schema=AdResult,
    )
    dead_letter = router.publisher(
        topics.dlq,
        title=f"{topics.dlq}:publish",
        description=prose(f"""Ad results the email notifier could not decode or handle.
        Headers: {DLQ_HEADERS_DOC} Replay with `python -m streams.cli dlq replay --topic
        {topics.dlq}`: they go to `{topics.redeliver}`, not to `{topics.main}`."""),
        schema=AdResult,
    )
    route = JobRoute(topics, settings.notifier_retry.policy(), retry=raw(retry), dead_letter=raw(dead_letter))
    router.add_middleware(FailureMiddleware(failures, route))
    max_bytes = settings.worker.max_job_bytes

    async def decode(msg: StreamMessage[Any]) -> AdResult:
        return decode_job(msg.body, _AD_RESULT, max_bytes=max_bytes)

    @router.subscriber(
        *topics.consumed,
        group_id=f"{settings.kafka.group_id}.{EMAIL_NOTIFIER}",
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=decode,
        title=f"{topics.main}:{EMAIL_NOTIFIER}",
        description=prose(f"""The email notifier: for each succeeded result whose job asked
        for email, it publishes an `AD_READY` job on `{email_bulk}`. It also reads
        `{topics.redeliver}`, where its own retries come back."""),
    )
    async def notify_by_email(result: AdResult) -> None:
        job = ad_ready_email(result)
        if job is not None:
            await emails.publish(job, key=str(job.to).lower().encode())
            log.info("asked for an AD_READY email for ad job %s", result.job_id)

    redeliver = router.publisher(
        topics.redeliver,
        title=f"{topics.redeliver}:redeliver",
        description="Ad results whose retry in the email notifier is due; only that notifier reads them.",
        schema=AdResult,
    )
    return Consumed(router, route, raw(redeliver))
