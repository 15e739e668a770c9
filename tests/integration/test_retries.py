"""Retries, dead letters and effectively-once sending, on the real broker and store."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from typing import Any

from processors.email.jobs import SendOtpJob, WelcomeEmailJob
from processors.email.ledger import DeliveryLedger
from streams.producer import JobPublisher
from streams.retry import headers as h
from streams.topics import TopicNames
from tests.fakes.resend_server import FakeResend, Reply
from tests.integration.conftest import KAFKA
from tests.integration.kafka_tools import group_lag, records_in
from tests.integration.worker import run_cli
from tests.polling import eventually

FAST_RETRIES = {
    "EMAIL_RETRY_BASE_MS": "400",
    "EMAIL_RETRY_MULTIPLIER": "2",
    "EMAIL_RETRY_CAP_MS": "3000",
    "EMAIL_RETRY_MAX_ATTEMPTS": "6",
}


def otp(job_id: str, to: str = "ada@example.com") -> SendOtpJob:
    return SendOtpJob(type="SEND_OTP", job_id=job_id, to=to, code="424242")


async def publish_and_deliver_once_each(
    publisher: JobPublisher, topics: TopicNames, fake: FakeResend, jobs: list[SendOtpJob]
) -> None:
    """Publish `jobs`; each is delivered, and exactly once."""
    for job in jobs:
        await publisher.email(job, topic=topics.email_jobs.main)
    await eventually(lambda: len(fake.deliveries) >= len(jobs), timeout_s=60, what="all deliveries")
    by_key = fake.deliveries_by_key()
    assert sorted(by_key) == sorted(j.job_id for j in jobs)
    assert all(len(d) == 1 for d in by_key.values()), "a job was delivered twice"


async def test_transient_failures_are_retried_on_time_and_delivered_exactly_once(
    start_worker: Any, publisher: JobPublisher, topics: TopicNames, fake_resend: FakeResend, run_id: str
) -> None:
    jobs = [otp(f"{run_id}-{i}", to=f"u{i}@example.com") for i in range(30)]
    for job in jobs[:10]:
        fake_resend.script(job.job_id, Reply(503), Reply(503))
    for job in jobs[10:15]:
        fake_resend.script(job.job_id, Reply(503, retry_after_s=2))
    start_worker(**FAST_RETRIES)
    await publish_and_deliver_once_each(publisher, topics, fake_resend, jobs)

    # Lateness: when the retry reached the provider, minus when it was due.
    retries = await records_in(KAFKA, topics.email_jobs.retry)
    requests_by_key: dict[str | None, list[float]] = defaultdict(list)
    for request in fake_resend.requests:
        requests_by_key[request.idempotency_key].append(request.at_s)
    lateness_ms = []
    for letter in retries:
        job_id = json.loads(letter.record.value)["job_id"]
        attempt = int(letter.record.headers[h.ATTEMPT])
        due_at_ms = int(letter.record.headers[h.DUE_AT_MS])
        if job_id in {j.job_id for j in jobs[10:15]}:
            assert due_at_ms - int(letter.record.headers[h.LAST_FAILURE_AT_MS]) == 2_000, "Retry-After wins"
        arrived_at_ms = requests_by_key[job_id][attempt] * 1000
        lateness_ms.append(arrived_at_ms - due_at_ms)
    assert len(lateness_ms) == 10 * 2 + 5
    lateness_ms.sort()
    p50 = statistics.median(lateness_ms)
    p99 = lateness_ms[min(len(lateness_ms) - 1, int(len(lateness_ms) * 0.99))]
    print(f"\nretry lateness over {len(lateness_ms)} retries: p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    assert min(lateness_ms) >= -5, "a retry was delivered before it was due"
    assert p99 < 2_000


async def test_a_rate_limit_pauses_sending_and_costs_no_attempt(
    start_worker: Any,
    publisher: JobPublisher,
    topics: TopicNames,
    fake_resend: FakeResend,
    database: Any,
    run_id: str,
) -> None:
    jobs = [otp(f"{run_id}-{i}", to=f"u{i}@example.com") for i in range(6)]
    fake_resend.script(jobs[0].job_id, Reply(429, retry_after_s=2))
    start_worker(**FAST_RETRIES)
    await publish_and_deliver_once_each(publisher, topics, fake_resend, jobs)
    limited = [r for r in fake_resend.requests if r.idempotency_key == jobs[0].job_id]
    assert [r.status for r in limited] == [429, 200]
    assert limited[1].arrived_s - limited[0].arrived_s >= 2 - 0.05, "retry-after is honoured"
    assert await records_in(KAFKA, topics.email_jobs.retry) == [], "a 429 alone never retries a job"
    entry = await DeliveryLedger(database["email_deliveries"], lease_s=30).get(jobs[0].job_id)
    assert entry is not None
    assert (entry["status"], entry["attempts"]) == ("sent", 1)


async def test_permanent_failure_is_dead_lettered_after_one_attempt(
    start_worker: Any,
    publisher: JobPublisher,
    topics: TopicNames,
    fake_resend: FakeResend,
    database: Any,
    run_id: str,
) -> None:
    job = otp(f"{run_id}-bad")
    fake_resend.script(job.job_id, Reply(422))
    start_worker(**FAST_RETRIES)
    await publisher.email(job, topic=topics.email_jobs.main)

    letters = await eventually(
        lambda: records_in(KAFKA, topics.email_jobs.dlq), timeout_s=30, what="a dead letter"
    )
    [letter] = letters
    assert letter.record.headers[h.DLQ_REASON] == "permanent"
    assert letter.record.headers[h.ERROR_CLASS] == "Resend422:validation_error"
    assert letter.record.headers[h.ATTEMPT] == "1"
    assert letter.record.headers[h.ORIGIN_TOPIC] == topics.email_jobs.main
    assert json.loads(letter.record.value)["job_id"] == job.job_id
    assert len(fake_resend.requests) == 1
    entry = await DeliveryLedger(database["email_deliveries"], lease_s=30).get(job.job_id)
    assert entry is not None
    assert entry["status"] == "failed"


async def test_a_short_retry_does_not_wait_behind_a_long_one(
    start_worker: Any, publisher: JobPublisher, topics: TopicNames, fake_resend: FakeResend, run_id: str
) -> None:
    slow, fast = otp(f"{run_id}-slow", "slow@example.com"), otp(f"{run_id}-fast", "fast@example.com")
    fake_resend.script(slow.job_id, Reply(503, retry_after_s=60))
    fake_resend.script(fast.job_id, Reply(503, retry_after_s=1))
    start_worker()
    await publisher.email(slow, topic=topics.email_jobs.main)
    await eventually(lambda: len(fake_resend.requests) == 1, timeout_s=30, what="the slow job's first try")
    await publisher.email(fast, topic=topics.email_jobs.main)

    await eventually(
        lambda: fake_resend.deliveries_by_key().get(fast.job_id), timeout_s=15, what="the fast job's retry"
    )
    assert slow.job_id not in fake_resend.deliveries_by_key(), "the 60 s retry must still be waiting"


async def test_poison_messages_are_dead_lettered_with_their_bytes_and_the_worker_goes_on(
    start_worker: Any, publisher: JobPublisher, topics: TopicNames, fake_resend: FakeResend, run_id: str
) -> None:
    poison = {
        "invalid-json": b"\x00\x01 definitely not json",
        "schema": json.dumps(
            {"type": "SEND_OTP", "job_id": "p1", "to": "ada@example.com", "code": "12"}
        ).encode(),
        "unknown-type": json.dumps({"type": "SEND_FAX", "job_id": "p2", "to": "ada@example.com"}).encode(),
        "oversized": json.dumps(
            {"type": "WELCOME_EMAIL", "job_id": "p3", "to": "a@example.com", "name": "x" * 70_000}
        ).encode(),
    }
    start_worker()
    for raw in poison.values():
        await publisher.send_raw(topics.email_jobs.main, raw, key=b"ada@example.com", headers={})
    valid = WelcomeEmailJob(type="WELCOME_EMAIL", job_id=f"{run_id}-ok", to="ada@example.com", name="Ada")
    await publisher.email(valid, topic=topics.email_jobs.main)

    await eventually(
        lambda: fake_resend.deliveries_by_key().get(valid.job_id), timeout_s=30, what="the valid job"
    )
    letters = await eventually(
        lambda: _at_least(records_in(KAFKA, topics.email_jobs.dlq), len(poison)),
        timeout_s=30,
        what="dead letters",
    )
    assert {letter.reason: letter.record.value for letter in letters} == poison
    assert all(letter.record.headers[h.ERROR_MESSAGE] for letter in letters)


async def _at_least(records: Any, count: int) -> Any:
    found = await records
    return found if len(found) >= count else None


async def test_dead_letters_replay_once_after_the_provider_recovers(
    start_worker: Any,
    publisher: JobPublisher,
    topics: TopicNames,
    fake_resend: FakeResend,
    worker_env: dict[str, str],
    run_id: str,
) -> None:
    fake_resend.set_down(Reply(503))
    start_worker(EMAIL_RETRY_MAX_ATTEMPTS="2", EMAIL_RETRY_BASE_MS="100", EMAIL_RETRY_CAP_MS="200")
    jobs = [otp(f"{run_id}-r{i}", to=f"r{i}@example.com") for i in range(5)]
    for job in jobs:
        await publisher.email(job, topic=topics.email_jobs.main)
    letters = await eventually(
        lambda: _at_least(records_in(KAFKA, topics.email_jobs.dlq), len(jobs)),
        timeout_s=30,
        what="dead letters",
    )
    assert {letter.reason for letter in letters} == {"attempts-exhausted"}
    assert not fake_resend.deliveries

    fake_resend.set_down(None)

    async def cli(*args: str) -> str:
        return await run_cli("dlq", *args, "--topic", topics.email_jobs.dlq, env=worker_env)

    listing = await cli("list")
    assert f"{len(jobs)} dead letters" in listing
    assert "attempts-exhausted" in listing
    assert "SEND_OTP" in listing
    assert "would replay" in await cli("replay", "--dry-run")
    assert not fake_resend.deliveries, "a dry run publishes nothing"

    assert f"replayed {len(jobs)}" in await cli("replay", "--reason", "attempts-exhausted")
    await eventually(
        lambda: len(fake_resend.deliveries) >= len(jobs), timeout_s=30, what="replayed deliveries"
    )
    requests_after_first_replay = len(fake_resend.requests)

    await cli("replay")
    group = f"worker-{run_id}"

    async def caught_up() -> bool:
        return await group_lag(KAFKA, group, topics.email_jobs.main) == 0

    await eventually(caught_up, timeout_s=30, what="the second replay to be processed")
    assert len(fake_resend.deliveries) == len(jobs)
    assert len(fake_resend.requests) == requests_after_first_replay, "the ledger stops a second send"
