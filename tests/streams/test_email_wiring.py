"""Wiring of `email-jobs` with FastStream's in-memory TestKafkaBroker (no real broker)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from processors.email.jobs import EmailJobModel
from processors.errors import PermanentError, TransientError
from streams.app import broker
from streams.retry import headers as h
from streams.runtime import runtime

JOBS = {
    "SEND_OTP": {"type": "SEND_OTP", "job_id": "w-otp", "to": "ada@example.com", "code": "123456"},
    "WELCOME_EMAIL": {"type": "WELCOME_EMAIL", "job_id": "w-welcome", "to": "ada@example.com", "name": "Ada"},
    "VERIFICATION_LINK": {
        "type": "VERIFICATION_LINK",
        "job_id": "w-verify",
        "to": "ada@example.com",
        "verification_url": "https://app.example.com/v?t=abc",
    },
    "AD_READY": {
        "type": "AD_READY",
        "job_id": "w-ad",
        "to": "ada@example.com",
        "product_name": "Lamp",
        "platform": "GOOGLE_SEARCH",
        "headlines": ["Bright"],
        "ad_job_id": "ad-1",
    },
}


class RecordingProcessor:
    def __init__(self) -> None:
        self.jobs: list[EmailJobModel] = []
        self.fail_with: Exception | None = None

    async def process(self, job: EmailJobModel) -> None:
        self.jobs.append(job)
        if self.fail_with is not None:
            raise self.fail_with


@pytest.fixture
async def processor() -> AsyncIterator[RecordingProcessor]:
    recording = RecordingProcessor()
    runtime.email = recording
    yield recording
    runtime.email = None


# Collectors registered once: the app's broker is a module-level object.
_dead_letters: list[tuple[bytes, dict[str, str]]] = []
_retried: list[dict[str, str]] = []


@broker.subscriber("email-jobs.dlq", group_id="test-dlq")
async def _collect_dead_letter(message: KafkaMessage) -> None:
    _dead_letters.append((message.body, dict(message.headers)))


@broker.subscriber("email-jobs.retry", group_id="test-retry")
async def _collect_retry(message: KafkaMessage) -> None:
    _retried.append(dict(message.headers))


@pytest.fixture
def dead_letters() -> list[tuple[bytes, dict[str, str]]]:
    _dead_letters.clear()
    return _dead_letters


@pytest.fixture
def retried() -> list[dict[str, str]]:
    _retried.clear()
    return _retried


@pytest.mark.parametrize("kind", sorted(JOBS))
async def test_each_email_type_reaches_the_processor(processor: RecordingProcessor, kind: str) -> None:
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(JOBS[kind], topic="email-jobs")
    assert [job.type for job in processor.jobs] == [kind]
    assert processor.jobs[0].job_id == JOBS[kind]["job_id"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json at all", "invalid-json"),
        (b'{"type": "SEND_FAX", "job_id": "x", "to": "ada@example.com"}', "unknown-type"),
        (b'{"type": "SEND_OTP", "job_id": "x", "to": "not-an-email", "code": "123456"}', "schema"),
        (json.dumps({**JOBS["WELCOME_EMAIL"], "name": "x" * 70_000}).encode(), "oversized"),
    ],
)
async def test_invalid_message_is_dead_lettered_and_the_worker_goes_on(
    processor: RecordingProcessor, dead_letters: list[tuple[bytes, dict[str, str]]], raw: bytes, reason: str
) -> None:
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(raw, topic="email-jobs")
        await test_broker.publish(JOBS["SEND_OTP"], topic="email-jobs")
    assert [job.job_id for job in processor.jobs] == ["w-otp"]
    assert len(dead_letters) == 1
    body, headers = dead_letters[0]
    assert body == raw
    assert headers[h.DLQ_REASON] == reason


async def test_permanent_failure_goes_to_the_dlq_once(
    processor: RecordingProcessor, dead_letters: list[tuple[bytes, dict[str, str]]]
) -> None:
    processor.fail_with = PermanentError("Resend answered 422", error_class="Resend422:validation_error")
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(JOBS["WELCOME_EMAIL"], topic="email-jobs")
    assert len(processor.jobs) == 1
    _, headers = dead_letters[0]
    assert headers[h.DLQ_REASON] == "permanent"
    assert headers[h.ERROR_CLASS] == "Resend422:validation_error"
    assert headers[h.ATTEMPT] == "1"


async def test_transient_failure_goes_to_the_retry_topic_with_a_due_time(
    processor: RecordingProcessor, retried: list[dict[str, str]]
) -> None:
    processor.fail_with = TransientError("Resend answered 429", error_class="Resend429", retry_after_ms=2_000)

    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(JOBS["SEND_OTP"], topic="email-jobs", key=b"ada@example.com")
    assert len(retried) == 1
    headers = retried[0]
    assert headers[h.ATTEMPT] == "1"
    assert headers[h.ORIGIN_TOPIC] == "email-jobs"
    assert int(headers[h.DUE_AT_MS]) - int(headers[h.LAST_FAILURE_AT_MS]) == 2_000
    assert "123456" not in json.dumps(headers)
