"""`job show` and `jobs` as an operator runs them, on the real broker and store.

Given jobs seeded through the real ledger and ads store, and their records published on
retry and dead-letter topics with the project's producer, when the CLI is asked, then it
tells each job's attempts and where it waits now, and never a code.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from processors.ads.jobs import AdJob
from processors.ads.store import AdStore
from processors.email.delivery_events import DeliveryEvents
from processors.email.events import DeliveryEvent, EventKind
from processors.email.ledger import DeliveryLedger, Sent
from streams.admin import ensure_topics
from streams.producer import JobPublisher
from streams.retry import headers as h
from streams.topics import TopicNames
from tests.integration.conftest import KAFKA
from tests.integration.worker import cli_process, run_cli

ADA = "ada@example.com"
CODE = "482913"


def cli_env(run_id: str) -> dict[str, str]:
    return {
        "KAFKA_TOPIC_PREFIX": f"t{run_id}.",
        "MONGODB_DATABASE": f"test_{run_id}",
        "KAFKA_GROUP_ID": f"worker-{run_id}",
        "LOG_LEVEL": "WARNING",
    }


async def send_email_job(
    database: Any,
    job_id: str,
    to: str,
    *,
    at: datetime,
    email_type: str = "SEND_OTP",
    fail_first: bool = False,
    sent: bool = True,
) -> None:
    """Through the real ledger: optionally a failed first attempt, then a send."""
    ledger = DeliveryLedger(database["email_deliveries"], lease_s=30)
    claim = await ledger.claim(job_id=job_id, email_type=email_type, recipient=to, now=at)
    if fail_first:
        await ledger.mark_failed(
            job_id=job_id,
            attempt=claim.attempt,
            error_class="ProviderUnavailable",
            permanent=False,
            now=at,
            sent=Sent.NO,
        )
        if sent:
            claim = await ledger.claim(job_id=job_id, email_type=email_type, recipient=to, now=at)
    if sent:
        later = at + timedelta(seconds=2)
        await ledger.mark_sent(
            job_id=job_id,
            attempt=claim.attempt,
            provider="resend",
            provider_message_id=f"msg-{job_id}",
            now=later,
        )
    await ledger.aclose()


async def delivered(database: Any, job_id: str, at: datetime) -> None:
    events = DeliveryEvents(database)
    event = DeliveryEvent(
        event_id=f"evt-{job_id}",
        kind=EventKind.DELIVERED,
        resend_type="email.delivered",
        email_id=f"msg-{job_id}",
        recipients=(ADA,),
        occurred_at=at,
        received_at=at,
    )
    assert await events.record(event, at)
    await events.aclose()


async def publish_failure(topic: str, value: dict[str, Any], headers: dict[str, str]) -> None:
    async with JobPublisher(KAFKA) as publisher:
        await publisher.send_raw(topic, json.dumps(value).encode(), key=ADA.encode(), headers=headers)


def failure_headers(*, attempt: int, error_class: str, message: str, at: datetime) -> dict[str, str]:
    at_ms = str(int(at.timestamp() * 1000))
    return {
        h.ATTEMPT: str(attempt),
        h.ERROR_CLASS: error_class,
        h.ERROR_MESSAGE: message,
        h.FIRST_FAILURE_AT_MS: at_ms,
        h.LAST_FAILURE_AT_MS: at_ms,
    }


async def commit(group: str, topic: str, offset: int) -> None:
    """As the retry scheduler does once it sent a record back: commit past it."""
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


async def run_cli_failing(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    return await cli_process(*args, env=env)


async def test_job_show_tells_the_attempts_of_a_job_retried_once_and_where_it_waits(
    topics: TopicNames, database: Any, run_id: str
) -> None:
    await ensure_topics(KAFKA, topics.all, partitions=1, replication_factor=1)
    env = cli_env(run_id)
    job_id = f"otp-{run_id}"
    failed_at = datetime.now(UTC) - timedelta(seconds=20)
    await send_email_job(database, job_id, ADA, at=failed_at, fail_first=True)
    await delivered(database, job_id, failed_at + timedelta(seconds=5))
    due_at = failed_at + timedelta(seconds=1)
    headers = failure_headers(
        attempt=1, error_class="ProviderUnavailable", message="resend answered 503", at=failed_at
    ) | {h.DUE_AT_MS: str(int(due_at.timestamp() * 1000)), h.ORIGIN_TOPIC: topics.email_jobs.main}
    job = {"type": "SEND_OTP", "job_id": job_id, "to": ADA, "code": CODE}
    await publish_failure(topics.email_jobs.retry, job, headers)

    waiting = json.loads(await run_cli("job", "show", job_id, "--json", env=env))
    await commit(f"worker-{run_id}.retry", topics.email_jobs.retry, 1)
    shown = await run_cli("job", "show", job_id, env=env)

    assert waiting["kind"] == "email"
    assert waiting["document"]["status"] == "sent"
    assert waiting["document"]["delivery"] == "delivered"
    assert [(a["attempt"], a["outcome"], a["error"]) for a in waiting["attempts"]] == [
        (1, "retrying", "ProviderUnavailable"),
        (2, "sent", None),
    ]
    assert waiting["attempts"][0]["error_message"] == "resend answered 503"
    [record] = waiting["topics"]
    assert (record["topic"], record["kind"], record["waiting"]) == (topics.email_jobs.retry, "retry", True)
    assert record["summary"].startswith(f"in {topics.email_jobs.retry}, due at {due_at:%Y-%m-%d %H:%M:%S}Z")
    print(f"\n$ python -m streams.cli job show {job_id}\n{shown}")
    assert f"email job {job_id}  SEND_OTP to {ADA}" in shown
    assert "ProviderUnavailable: resend answered 503" in shown
    assert "not in any retry or dead-letter topic" in shown
    assert f"was in {topics.email_jobs.retry} after attempt 1 failed" in shown
    for output in (shown, json.dumps(waiting)):
        assert CODE not in output


async def test_job_show_tells_an_ad_job_in_a_dead_letter_topic(
    topics: TopicNames, database: Any, run_id: str
) -> None:
    await ensure_topics(KAFKA, topics.all, partitions=1, replication_factor=1)
    env = cli_env(run_id)
    job = AdJob.model_validate(
        {
            "job_id": f"ad-{run_id}",
            "user_id": "u-1",
            "product": {"name": "Lumen desk lamp", "description": "Folds flat."},
            "audience": "students who study late",
            "platform": "GOOGLE_SEARCH",
            "notify": {"email": ADA},
        }
    )
    now = datetime.now(UTC)
    store = AdStore(database["ads"])
    await store.claim(job, now, lease_s=30)
    await store.mark_failed(job.job_id, "no model configured", "NoModelConfigured", now=now)
    await store.aclose()
    headers = failure_headers(
        attempt=1, error_class="NoModelConfigured", message="no model configured", at=now
    )
    await publish_failure(
        topics.ad_jobs.dlq, job.model_dump(mode="json"), headers | {h.DLQ_REASON: "permanent"}
    )

    shown = json.loads(await run_cli("job", "show", job.job_id, "--json", env=env))
    text = await run_cli("job", "show", job.job_id, env=env)

    assert shown["kind"] == "ad"
    assert shown["document"]["status"] == "failed"
    assert shown["document"]["request"]["product"]["name"] == "Lumen desk lamp"
    assert [(a["outcome"], a["error"], a["error_message"]) for a in shown["attempts"]] == [
        ("failed", "NoModelConfigured", "no model configured")
    ]
    [record] = shown["topics"]
    assert record["summary"].startswith(
        f"in {topics.ad_jobs.dlq}, reason permanent (NoModelConfigured: no model configured)"
    )
    assert f"ad job {job.job_id}" in text
    assert "Lumen desk lamp" in text
    assert f"in {topics.ad_jobs.dlq}, reason permanent" in text


async def test_job_show_of_an_unknown_job_fails_with_one_line(
    topics: TopicNames, database: Any, run_id: str
) -> None:
    await ensure_topics(KAFKA, topics.all, partitions=1, replication_factor=1)

    status, out, err = await run_cli_failing("job", "show", "otp-nobody", env=cli_env(run_id))

    assert (status, out) == (1, "")
    assert err.startswith("no job otp-nobody in the email ledger")
    assert len(err.splitlines()) == 1


async def test_jobs_lists_a_recipients_recent_jobs_matched_exactly(
    topics: TopicNames, database: Any, run_id: str
) -> None:
    env = cli_env(run_id)
    now = datetime.now(UTC)
    await send_email_job(database, "otp-recent", ADA, at=now - timedelta(minutes=5))
    await delivered(database, "otp-recent", now - timedelta(minutes=4))
    await send_email_job(
        database,
        "welcome-retrying",
        "Ada@Example.com",
        at=now - timedelta(minutes=10),
        email_type="WELCOME_EMAIL",
        fail_first=True,
        sent=False,
    )
    await send_email_job(database, "otp-old", ADA, at=now - timedelta(hours=3))
    for job_id, other in (
        ("otp-bob", "bob@example.com"),
        ("otp-xada", "xada@example.com"),
        ("otp-evil", "ada@example.com.evil.test"),
    ):
        await send_email_job(database, job_id, other, at=now - timedelta(minutes=1))

    recent = json.loads(await run_cli("jobs", "--to", "ADA@example.com", "--since", "1h", "--json", env=env))
    longer = json.loads(await run_cli("jobs", "--to", ADA, "--since", "4h", "--json", env=env))
    text = await run_cli("jobs", "--to", ADA, "--since", "1h", env=env)
    nobody = await run_cli("jobs", "--to", "nobody@example.com", "--since", "30m", env=env)

    assert (recent["recipient"], recent["since"]) == ("ADA@example.com", "1h")
    assert [job["job_id"] for job in recent["jobs"]] == ["otp-recent", "welcome-retrying"]
    sent, retrying = recent["jobs"]
    assert set(sent) == {
        "job_id",
        "type",
        "status",
        "attempts",
        "last_error",
        "sent_at",
        "delivery",
        "created_at",
    }
    assert (sent["type"], sent["status"], sent["attempts"], sent["delivery"]) == (
        "SEND_OTP",
        "sent",
        1,
        "delivered",
    )
    assert sent["last_error"] is None
    assert sent["sent_at"] is not None
    assert (retrying["status"], retrying["last_error"], retrying["sent_at"]) == (
        "retrying",
        "ProviderUnavailable",
        None,
    )
    assert [job["job_id"] for job in longer["jobs"]] == ["otp-recent", "welcome-retrying", "otp-old"]
    for job_id in ("otp-recent", "welcome-retrying", "delivered", "ProviderUnavailable"):
        assert job_id in text
    for job_id in ("otp-old", "otp-bob", "otp-xada", "otp-evil"):
        assert job_id not in text
    assert nobody.startswith("no email jobs to nobody@example.com in the last 30m")


async def test_every_read_command_answers_json_without_secrets(
    topics: TopicNames, database: Any, run_id: str
) -> None:
    await ensure_topics(KAFKA, topics.all, partitions=1, replication_factor=1)
    env = cli_env(run_id)
    now = datetime.now(UTC)
    job = {"type": "SEND_OTP", "job_id": f"otp-{run_id}", "to": ADA, "code": CODE}
    headers = failure_headers(
        attempt=5, error_class="ProviderUnavailable", message="resend answered 503", at=now
    )
    await publish_failure(topics.email_jobs.dlq, job, headers | {h.DLQ_REASON: "attempts-exhausted"})
    await run_cli("suppressions", "add", ADA, env=env)

    listed = json.loads(await run_cli("dlq", "list", "--topic", topics.email_jobs.dlq, "--json", env=env))
    shown = json.loads(
        await run_cli("dlq", "show", "0:0", "--topic", topics.email_jobs.dlq, "--json", env=env)
    )
    raw = json.loads(
        await run_cli("dlq", "show", "0:0", "--topic", topics.email_jobs.dlq, "--raw", "--json", env=env)
    )
    suppressed = json.loads(await run_cli("suppressions", "list", "--json", env=env))

    assert listed["count"] == 1
    assert listed["by_reason"] == [{"reason": "attempts-exhausted", "type": "SEND_OTP", "count": 1}]
    [letter] = listed["dead_letters"]
    assert (letter["ref"], letter["attempts"], letter["error_class"]) == ("0:0", 5, "ProviderUnavailable")
    assert shown["value"] == {**job, "code": "<redacted>"}
    assert shown["key"] == ADA
    assert shown["headers"][h.DLQ_REASON] == "attempts-exhausted"
    assert CODE not in json.dumps([listed, shown])
    assert raw["value"]["code"] == CODE
    assert suppressed["count"] == 1
    [entry] = suppressed["suppressions"]
    assert (entry["address"], entry["reason"], entry["source"]) == (ADA, "manual", "cli")
