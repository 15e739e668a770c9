"""What users live: dead codes are not sent, newer codes win, bulk mail moves out of the
codes' way, and a newer producer's jobs still go out. The worker run as users run it,
on the real broker and store, counted at the fake provider."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from processors.email.jobs import SendOtpJob, WelcomeEmailJob
from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.fakes.resend_server import FakeResend, Reply
from tests.integration.conftest import KAFKA
from tests.integration.kafka_tools import records_in
from tests.polling import eventually


def otp(run_id: str, name: str, code: str, **more: Any) -> dict[str, Any]:
    return {"type": "SEND_OTP", "job_id": f"{run_id}-{name}", "to": "ada@example.com", "code": code, **more}


async def publish(
    publisher: JobPublisher, topic: str, job: dict[str, Any], *, published_at_ms: int | None = None
) -> None:
    await publisher.producer.send_and_wait(
        topic, json.dumps(job).encode(), key=str(job["to"]).encode(), timestamp_ms=published_at_ms
    )


async def dead_letters(topic: str, count: int) -> list[Any]:
    found: list[Any] = []

    async def arrived() -> bool:
        found[:] = await records_in(KAFKA, topic)
        return len(found) >= count

    await eventually(arrived, timeout_s=60, what=f"{count} dead letters on {topic}")
    return found


def codes_delivered(fake: FakeResend) -> list[str]:
    return [d.body["text"] for d in fake.deliveries]


async def test_a_code_that_died_in_the_backlog_is_dead_lettered_not_sent(
    start_worker: Any, publisher: JobPublisher, topics: TopicNames, fake_resend: FakeResend, run_id: str
) -> None:
    now_ms = int(time.time() * 1000)
    # Published 11 minutes ago with a 10-minute code: the user gave up on it.
    await publish(
        publisher, topics.email_jobs.main, otp(run_id, "stale", "111111"), published_at_ms=now_ms - 660_000
    )
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    await publish(publisher, topics.email_jobs.main, otp(run_id, "cut", "222222", not_after=past))
    await publish(publisher, topics.email_jobs.main, otp(run_id, "alive", "333333"))
    worker = start_worker()
    await eventually(lambda: len(fake_resend.deliveries) >= 1, timeout_s=60, what="the live code")
    found = await dead_letters(topics.email_jobs.dlq, 2)
    assert sorted(r.reason for r in found) == ["expired", "expired"]
    assert {json.loads(r.record.value)["code"] for r in found} == {"111111", "222222"}  # original bytes
    assert [d.idempotency_key for d in fake_resend.deliveries] == [f"{run_id}-alive"]
    assert [r for r in fake_resend.requests if r.idempotency_key == f"{run_id}-stale"] == []
    assert "111111" not in worker.log()
    assert "222222" not in worker.log()


async def test_a_retry_that_would_come_due_after_the_deadline_dead_letters_at_once(
    start_worker: Any, publisher: JobPublisher, topics: TopicNames, fake_resend: FakeResend, run_id: str
) -> None:
    job = otp(run_id, "short", "444444", not_after=(datetime.now(UTC) + timedelta(seconds=20)).isoformat())
    # The provider asks for a minute: past the code's 20 s.
    fake_resend.script(job["job_id"], Reply(503, retry_after_s=60))
    start_worker()
    started_s = time.monotonic()
    await publish(publisher, topics.email_jobs.main, job)
    [dead] = await dead_letters(topics.email_jobs.dlq, 1)
    assert dead.reason == "expired"
    assert dead.record.headers["x-error-class"].startswith("Resend503")
    assert time.monotonic() - started_s < 20  # not after waiting out the backoff
    assert await records_in(KAFKA, topics.email_jobs.retry) == []


async def test_an_older_code_that_comes_up_after_a_newer_one_was_sent_is_dropped(
    start_worker: Any, publisher: JobPublisher, topics: TopicNames, fake_resend: FakeResend, run_id: str
) -> None:
    worker = start_worker()
    now_ms = int(time.time() * 1000)
    await publish(publisher, topics.email_jobs.main, otp(run_id, "newer", "555555"), published_at_ms=now_ms)
    await eventually(lambda: len(fake_resend.deliveries) >= 1, timeout_s=60, what="the newer code")
    # The older one (asked for 30 s earlier) comes up only now, as after a retry.
    await publish(
        publisher, topics.email_jobs.main, otp(run_id, "older", "666666"), published_at_ms=now_ms - 30_000
    )
    # Another purpose is another code: sent.
    await publish(
        publisher,
        topics.email_jobs.main,
        otp(run_id, "reset", "777777", purpose="password-reset"),
        published_at_ms=now_ms - 30_000,
    )
    await eventually(lambda: len(fake_resend.deliveries) >= 2, timeout_s=60, what="the reset code")
    await eventually(
        lambda: "superseded" in worker.log_since_start(), timeout_s=30, what="the older code to be dropped"
    )
    assert sorted(d.idempotency_key or "" for d in fake_resend.deliveries) == [
        f"{run_id}-newer",
        f"{run_id}-reset",
    ]
    assert [r for r in fake_resend.requests if r.idempotency_key == f"{run_id}-older"] == []
    assert await records_in(KAFKA, topics.email_jobs.dlq) == []  # dropped, not dead-lettered


async def test_a_job_from_a_newer_producer_with_extra_fields_is_sent(
    start_worker: Any, publisher: JobPublisher, topics: TopicNames, fake_resend: FakeResend, run_id: str
) -> None:
    worker = start_worker()
    job = otp(run_id, "v3", "888888", schema_version=3, locale="fr-FR", delivery={"channel": "email"})
    await publish(publisher, topics.email_jobs.main, job)
    await eventually(lambda: len(fake_resend.deliveries) >= 1, timeout_s=60, what="the newer producer's job")
    assert "888888" in fake_resend.deliveries[0].body["text"]
    assert "delivery, locale" in worker.log_since_start()


async def test_bulk_mail_published_on_email_jobs_is_moved_and_sent_once(
    start_worker: Any, publisher: JobPublisher, topics: TopicNames, fake_resend: FakeResend, run_id: str
) -> None:
    start_worker()
    welcome = WelcomeEmailJob(type="WELCOME_EMAIL", job_id=f"{run_id}-w", to="ada@example.com", name="Ada")
    code = SendOtpJob(type="SEND_OTP", job_id=f"{run_id}-c", to="bob@example.com", code="999999")
    await publisher.email(welcome, topic=topics.email_jobs.main)  # an older producer's habit
    await publisher.email(code, topic=topics.email_jobs.main)
    await eventually(lambda: len(fake_resend.deliveries) >= 2, timeout_s=60, what="both emails")
    assert sorted(d.idempotency_key or "" for d in fake_resend.deliveries) == sorted(
        [welcome.job_id, code.job_id]
    )
    moved = await records_in(KAFKA, topics.email_bulk.main)
    assert [json.loads(r.record.value)["job_id"] for r in moved] == [welcome.job_id]
    assert int(moved[0].record.headers["x-published-at-ms"]) > 0
