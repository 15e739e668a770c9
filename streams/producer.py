"""Publishing jobs from Python: `publish_email_job(...)` and `JobPublisher`.

from processors.email import SendOtpJob
from streams.producer import publish_email_job

job = SendOtpJob(type="SEND_OTP", job_id="otp-1", to="ada@example.com", code="123456")
job_id = await publish_email_job(job)
"""

from __future__ import annotations

import uuid
from types import TracebackType

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel

from processors.ads.jobs import AdJob
from processors.email.jobs import EmailJobModel
from streams.settings import get_settings
from streams.topics import AD_JOBS, EMAIL_JOBS


def new_job_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


class JobPublisher:
    """An idempotent producer with `acks=all`: a returned call means the job is durable."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=True
        )

    async def __aenter__(self) -> JobPublisher:
        await self._producer.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._producer.stop()

    async def publish(self, topic: str, job: BaseModel, *, key: str | None) -> None:
        value = job.model_dump_json().encode()
        await self._producer.send_and_wait(
            topic, value, key=key.encode() if key else None, headers=[("content-type", b"application/json")]
        )

    async def send_raw(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str]) -> None:
        await self._producer.send_and_wait(
            topic, value, key=key, headers=[(k, v.encode()) for k, v in headers.items()]
        )

    async def email(self, job: EmailJobModel, *, topic: str = EMAIL_JOBS.main) -> str:
        # Keyed by recipient: one user's emails stay in order on one partition.
        await self.publish(topic, job, key=str(job.to).lower())
        return job.job_id

    async def ad(self, job: AdJob, *, topic: str = AD_JOBS.main) -> str:
        # Keyed by user: one user's ad jobs, and so their results, stay in order.
        await self.publish(topic, job, key=job.user_id)
        return job.job_id


def _bootstrap(bootstrap_servers: str | None) -> str:
    return bootstrap_servers or get_settings().kafka_bootstrap_servers


async def publish_email_job(job: EmailJobModel, *, bootstrap_servers: str | None = None) -> str:
    """Publish one email job and return its `job_id` once the broker has it."""
    async with JobPublisher(_bootstrap(bootstrap_servers)) as publisher:
        return await publisher.email(job)


async def publish_ad_job(job: AdJob, *, bootstrap_servers: str | None = None) -> str:
    """Publish one ad job and return its `job_id` once the broker has it."""
    async with JobPublisher(_bootstrap(bootstrap_servers)) as publisher:
        return await publisher.ad(job)
