"""One failure policy for every subscriber: ads and the email notifier route failures like email."""

from __future__ import annotations

import json

from faststream.kafka import TestKafkaBroker

from processors.errors import PermanentError, TransientError
from streams.retry import headers as h
from tests.streams.apps import build_test_app

AD_JOB = {
    "job_id": "ad-1",
    "user_id": "u-1",
    "product": {"name": "Lamp", "description": "A warm desk lamp for late readers."},
    "audience": "Students who study late",
    "tone": "warm",
    "platform": "GOOGLE_SEARCH",
}


async def test_a_permanently_failed_ad_tells_the_user_and_is_dead_lettered() -> None:
    given = build_test_app("p.")
    results = given.collect("p.ad-results")
    dead_letters = given.collect("p.ad-jobs.dlq")
    given.ads.fail_with = PermanentError("refused", error_class="Refusal")
    async with TestKafkaBroker(given.broker) as broker:
        await broker.publish(AD_JOB, topic="p.ad-jobs", key=b"u-1")
    [(value, key, _)] = results.records
    result = json.loads(value)
    assert (result["job_id"], result["status"], result["error_class"]) == ("ad-1", "failed", "Refusal")
    assert key == b"u-1"
    [headers] = dead_letters.headers
    assert headers[h.DLQ_REASON] == "permanent"


async def test_a_transient_ad_failure_is_retried_without_a_result() -> None:
    given = build_test_app("p.")
    results = given.collect("p.ad-results")
    retried = given.collect("p.ad-jobs.retry")
    given.ads.fail_with = TransientError("429", error_class="OpenAI429")
    async with TestKafkaBroker(given.broker) as broker:
        await broker.publish(AD_JOB, topic="p.ad-jobs", key=b"u-1")
    assert len(retried.records) == 1
    assert results.records == []


async def test_an_ad_result_the_email_notifier_cannot_read_goes_to_its_own_dead_letter_topic() -> None:
    given = build_test_app("p.")
    dead_letters = given.collect("p.ad-results.email-notifier.dlq")
    emails = given.collect("p.email-bulk")
    async with TestKafkaBroker(given.broker) as broker:
        await broker.publish(b"{not json", topic="p.ad-results")
    [(value, _, headers)] = dead_letters.records
    assert value == b"{not json"
    assert headers[h.DLQ_REASON] == "invalid-json"
    assert emails.records == []


async def test_the_email_notifier_reads_its_own_redelivered_results() -> None:
    given = build_test_app("p.")
    emails = given.collect("p.email-bulk")
    result = {
        "job_id": "ad-9",
        "user_id": "u-1",
        "status": "succeeded",
        "variants": [{"headline": "Bright", "body": "Read late, read well."}],
        "document": {"id": "ad-9"},
        "platform": "GOOGLE_SEARCH",
        "product_name": "Lamp",
        "notify": {"email": "ada@example.com"},
        "completed_at": "2026-11-29T08:00:00Z",
    }
    async with TestKafkaBroker(given.broker) as broker:
        await broker.publish(result, topic="p.ad-results.email-notifier")
    [(value, key, _)] = emails.records
    assert json.loads(value)["job_id"] == "ad-ready-ad-9"
    assert key == b"ada@example.com"
