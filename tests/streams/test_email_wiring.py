"""Wiring of `email-jobs` with FastStream's in-memory TestKafkaBroker (no real broker)."""

from __future__ import annotations

import json

import pytest
from faststream.kafka import TestKafkaBroker

from processors.errors import PermanentError, TransientError
from streams.retry import headers as h
from tests.streams.apps import AppUnderTest, build_test_app

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


@pytest.fixture(params=["", "staging."], ids=["no-prefix", "prefix"])
def test_app(request: pytest.FixtureRequest) -> AppUnderTest:
    prefix: str = request.param
    return build_test_app(prefix)


@pytest.mark.parametrize("kind", sorted(JOBS))
async def test_each_email_type_reaches_the_processor(test_app: AppUnderTest, kind: str) -> None:
    async with TestKafkaBroker(test_app.broker) as broker:
        await broker.publish(JOBS[kind], topic=test_app.topics.email_jobs.main)
    assert [job.type for job in test_app.email.jobs] == [kind]
    assert test_app.email.jobs[0].job_id == JOBS[kind]["job_id"]


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
    test_app: AppUnderTest, raw: bytes, reason: str
) -> None:
    dead_letters = test_app.collect(test_app.topics.email_jobs.dlq)
    async with TestKafkaBroker(test_app.broker) as broker:
        await broker.publish(raw, topic=test_app.topics.email_jobs.main, key=b"ada@example.com")
        await broker.publish(JOBS["SEND_OTP"], topic=test_app.topics.email_jobs.main)
    assert [job.job_id for job in test_app.email.jobs] == ["w-otp"]
    assert len(dead_letters.records) == 1
    body, key, headers = dead_letters.records[0]
    assert body == raw
    assert key == b"ada@example.com"
    assert headers[h.DLQ_REASON] == reason
    assert headers[h.ORIGIN_TOPIC] == test_app.topics.email_jobs.main


async def test_permanent_failure_goes_to_the_dlq_once(test_app: AppUnderTest) -> None:
    dead_letters = test_app.collect(test_app.topics.email_jobs.dlq)
    retried = test_app.collect(test_app.topics.email_jobs.retry)
    test_app.email.fail_with = PermanentError("Resend answered 422", error_class="Resend422:validation_error")
    async with TestKafkaBroker(test_app.broker) as broker:
        await broker.publish(JOBS["SEND_OTP"], topic=test_app.topics.email_jobs.main)
    assert len(test_app.email.jobs) == 1
    assert retried.records == []
    [headers] = dead_letters.headers
    assert headers[h.DLQ_REASON] == "permanent"
    assert headers[h.ERROR_CLASS] == "Resend422:validation_error"
    assert headers[h.ATTEMPT] == "1"


async def test_transient_failure_goes_to_the_retry_topic_with_a_due_time(test_app: AppUnderTest) -> None:
    retried = test_app.collect(test_app.topics.email_jobs.retry)
    test_app.email.fail_with = TransientError(
        "Resend answered 429", error_class="Resend429", retry_after_ms=2_000
    )
    async with TestKafkaBroker(test_app.broker) as broker:
        await broker.publish(JOBS["SEND_OTP"], topic=test_app.topics.email_jobs.main, key=b"ada@example.com")
    [headers] = retried.headers
    assert headers[h.ATTEMPT] == "1"
    assert headers[h.ORIGIN_TOPIC] == test_app.topics.email_jobs.main
    assert int(headers[h.DUE_AT_MS]) - int(headers[h.LAST_FAILURE_AT_MS]) == 2_000
    assert "123456" not in json.dumps(headers)
    assert int(headers[h.PUBLISHED_AT_MS]) > 0


@pytest.mark.parametrize("kind", ["WELCOME_EMAIL", "AD_READY"])
async def test_bulk_mail_on_email_jobs_is_moved_to_email_bulk(test_app: AppUnderTest, kind: str) -> None:
    moved = test_app.collect(test_app.topics.email_bulk.main)
    async with TestKafkaBroker(test_app.broker) as broker:
        await broker.publish(
            JOBS[kind], topic=test_app.topics.email_jobs.main, key=b"ada@example.com", headers={"trace": "t1"}
        )
    [(body, key, headers)] = moved.records
    assert json.loads(body) == JOBS[kind]
    assert key == b"ada@example.com"
    assert headers["trace"] == "t1"
    assert int(headers[h.PUBLISHED_AT_MS]) > 0
    # Processed once, from email-bulk, with the time of its first publish.
    assert [job.type for job in test_app.email.jobs] == [kind]
    assert test_app.email.published_at[0] is not None
    assert int(test_app.email.published_at[0].timestamp() * 1000) == int(headers[h.PUBLISHED_AT_MS])


async def test_a_failed_bulk_job_retries_on_its_own_topics(test_app: AppUnderTest) -> None:
    retried = test_app.collect(test_app.topics.email_bulk.retry)
    test_app.email.fail_with = TransientError("Resend answered 503", error_class="Resend503")
    async with TestKafkaBroker(test_app.broker) as broker:
        await broker.publish(JOBS["WELCOME_EMAIL"], topic=test_app.topics.email_bulk.main)
    [headers] = retried.headers
    assert headers[h.ORIGIN_TOPIC] == test_app.topics.email_bulk.main


async def test_a_job_from_a_newer_producer_is_processed(test_app: AppUnderTest) -> None:
    newer = {**JOBS["SEND_OTP"], "schema_version": 3, "locale": "fr", "brand": {"color": "blue"}}
    async with TestKafkaBroker(test_app.broker) as broker:
        await broker.publish(newer, topic=test_app.topics.email_jobs.main)
    [job] = test_app.email.jobs
    assert job.job_id == "w-otp"
    assert job.schema_version == 3


async def test_a_bug_in_the_processor_is_retried_not_lost(test_app: AppUnderTest) -> None:
    retried = test_app.collect(test_app.topics.email_jobs.retry)
    test_app.email.fail_with = KeyError("bug")
    async with TestKafkaBroker(test_app.broker) as broker:
        await broker.publish(JOBS["VERIFICATION_LINK"], topic=test_app.topics.email_jobs.main)
    [headers] = retried.headers
    assert headers[h.ERROR_CLASS] == "UnexpectedError"
