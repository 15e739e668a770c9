"""The email notifier: an `ad-results` subscriber that asks for an AD_READY email.

It never sends email itself: it publishes an `AD_READY` job on `email-jobs`, so the email
path's retries, dead letters and ledger apply. The email job's id derives from the ad
job's id, so a result delivered twice still makes one email.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from types import TracebackType
from typing import Any

from faststream import AckPolicy, BaseMiddleware
from faststream.kafka import KafkaRouter
from faststream.message import StreamMessage
from pydantic import TypeAdapter

from processors.ads.jobs import AdResult
from processors.decoding import decode_job
from processors.email.jobs import AdReadyJob
from processors.errors import PoisonMessage
from streams.broker import broker
from streams.prose import prose
from streams.settings import Settings
from streams.topics import AD_RESULTS, EMAIL_JOBS

log = logging.getLogger(__name__)

_AD_RESULT: TypeAdapter[AdResult] = TypeAdapter(AdResult)
PUBLISH_FAILURE_PAUSE_S = 1.0


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


class _SkipUndecodable(BaseMiddleware):
    """A result we cannot read is logged and skipped: it must not block the partition."""

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        if isinstance(exc_val, PoisonMessage):
            log.warning("skipping an undecodable ad result: %s (%s)", exc_val.reason, exc_val.message)
            return True
        if isinstance(exc_val, Exception):
            log.exception("email notifier failed; the result will be read again", exc_info=exc_val)
            await asyncio.sleep(PUBLISH_FAILURE_PAUSE_S)
        return False


def build_notifier_router(settings: Settings) -> KafkaRouter:
    router = KafkaRouter(middlewares=[_SkipUndecodable])
    max_bytes = settings.max_job_bytes

    async def decode(msg: StreamMessage[Any]) -> AdResult:
        return decode_job(msg.body, _AD_RESULT, max_bytes=max_bytes)

    @router.subscriber(
        AD_RESULTS,
        group_id=f"{settings.kafka_group_id}.ad-email-notifier",
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=decode,
        title=f"{AD_RESULTS}:email-notifier",
        description=prose("""The email notifier: for each succeeded result whose job asked
        for email, it publishes an `AD_READY` job on `email-jobs`."""),
    )
    async def notify_by_email(result: AdResult) -> None:
        job = ad_ready_email(result)
        if job is not None:
            await broker.publish(job, topic=EMAIL_JOBS.main, key=str(job.to).lower().encode())
            log.info("asked for an AD_READY email for ad job %s", result.job_id)

    router.publisher(
        EMAIL_JOBS.main,
        title=f"{EMAIL_JOBS.main}:ad-ready",
        description="AD_READY email jobs published by the email notifier.",
        schema=AdReadyJob,
    )
    return router
