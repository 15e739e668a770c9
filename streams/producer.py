"""Publishing jobs from Python: `publish_email_job(...)` and `JobPublisher`.

from processors.email import SendOtpJob
from streams.producer import publish_email_job

job = SendOtpJob(type="SEND_OTP", job_id="otp-1", to="ada@example.com", code="123456")
job_id = await publish_email_job(job, bootstrap_servers="127.0.0.1:9092")
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel

from processors.ads.jobs import AdJob
from processors.email.jobs import BULK_TYPES, EmailJobModel
from streams.topics import TopicNames

_TRACE_CONTEXT = TraceContextTextMapPropagator()


def new_job_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


class JobPublisher:
    """An idempotent producer with `acks=all`: a returned call means the job is durable."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: TopicNames | None = None,
        *,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        """`client_options`: security keywords for aiokafka (`streams.security.client_kwargs`)."""
        self._topics = topics or TopicNames.with_prefix("")
        self._options = {
            **(client_options or {}),
            "bootstrap_servers": bootstrap_servers,
            "acks": "all",
            "enable_idempotence": True,
        }
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> JobPublisher:
        # Created here: an aiokafka client must be created inside the running event loop.
        self._producer = AIOKafkaProducer(**self._options)
        await self._producer.start()
        return self

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("use `async with JobPublisher(...)` first")
        return self._producer

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, topic: str, job: BaseModel, *, key: str | None) -> None:
        """Publish `job`; a span current in the caller (OpenTelemetry) becomes the job's trace."""
        value = job.model_dump_json().encode()
        headers = {"content-type": "application/json"}
        _TRACE_CONTEXT.inject(headers)  # `traceparent`, `tracestate`: nothing when no span is current
        await self.producer.send_and_wait(
            topic,
            value,
            key=key.encode() if key else None,
            headers=[(k, v.encode()) for k, v in headers.items()],
        )

    async def send_raw(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str]) -> None:
        """`headers` as given: a replayed record keeps its own `traceparent`."""
        await self.producer.send_and_wait(
            topic, value, key=key, headers=[(k, v.encode()) for k, v in headers.items()]
        )

    async def email(self, job: EmailJobModel, *, topic: str | None = None) -> str:
        # Codes and links on `email-jobs`, bulk mail on `email-bulk`. Keyed by recipient:
        # one user's emails stay in order on one partition.
        lane = self._topics.email_bulk if job.type in BULK_TYPES else self._topics.email_jobs
        await self.publish(topic or lane.main, job, key=str(job.to).lower())
        return job.job_id

    async def ad(self, job: AdJob, *, topic: str | None = None) -> str:
        # Keyed by user: one user's ad jobs, and so their results, stay in order.
        await self.publish(topic or self._topics.ad_jobs.main, job, key=job.user_id)
        return job.job_id


async def publish_email_job(
    job: EmailJobModel,
    *,
    bootstrap_servers: str,
    topic_prefix: str = "",
    client_options: Mapping[str, Any] | None = None,
) -> str:
    """Publish one email job and return its `job_id` once the broker has it."""
    topics = TopicNames.with_prefix(topic_prefix)
    async with JobPublisher(bootstrap_servers, topics, client_options=client_options) as publisher:
        return await publisher.email(job)


async def publish_ad_job(
    job: AdJob,
    *,
    bootstrap_servers: str,
    topic_prefix: str = "",
    client_options: Mapping[str, Any] | None = None,
) -> str:
    """Publish one ad job and return its `job_id` once the broker has it."""
    topics = TopicNames.with_prefix(topic_prefix)
    async with JobPublisher(bootstrap_servers, topics, client_options=client_options) as publisher:
        return await publisher.ad(job)
