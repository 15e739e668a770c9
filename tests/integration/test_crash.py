"""`kill -9` in the middle of 2,000 jobs, some waiting on retries: nothing lost, nothing doubled."""

from __future__ import annotations

import time
from typing import Any

from processors.email.ledger import DeliveryLedger
from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.fakes.resend_server import FakeResend, Reply
from tests.integration.conftest import KAFKA
from tests.integration.jobs import mixed_job
from tests.integration.kafka_tools import records_in
from tests.polling import eventually

JOB_COUNT = 2_000


async def test_a_killed_worker_loses_nothing_and_sends_nothing_twice(
    start_worker: Any,
    publisher: JobPublisher,
    topics: TopicNames,
    fake_resend: FakeResend,
    database: Any,
    run_id: str,
) -> None:
    jobs = [mixed_job(i, run_id) for i in range(JOB_COUNT)]
    for job in jobs[::10]:  # 200 jobs fail once or twice first: they wait on retries
        fake_resend.script(job.job_id, *[Reply(503)] * (1 + len(job.job_id) % 2))
    retry_env = {"EMAIL_RETRY_BASE_MS": "1000", "EMAIL_RETRY_MULTIPLIER": "2", "EMAIL_RETRY_CAP_MS": "4000"}
    worker = start_worker(**retry_env)
    for job in jobs:
        await publisher.email(job, topic=topics.email_jobs.main)

    await eventually(
        lambda: len(fake_resend.deliveries) >= JOB_COUNT // 3, timeout_s=120, what="a third of the jobs"
    )
    worker.kill()
    delivered_before_kill = len(fake_resend.deliveries)
    print(f"\nkilled the worker (kill -9) after {delivered_before_kill} of {JOB_COUNT} deliveries")

    start_worker(**retry_env)
    await eventually(
        lambda: len(fake_resend.deliveries_by_key()) >= JOB_COUNT, timeout_s=240, what="every job delivered"
    )
    by_key = fake_resend.deliveries_by_key()
    duplicates = sum(len(d) - 1 for d in by_key.values())
    scripted_failures = sum(1 + len(j.job_id) % 2 for j in jobs[::10])
    repeated_requests = len(fake_resend.requests) - JOB_COUNT - scripted_failures
    print(
        f"crash test: {len(by_key)} jobs delivered, duplicate deliveries: {duplicates}, "
        f"repeated requests absorbed by the Idempotency-Key: {repeated_requests}"
    )
    assert sorted(by_key) == sorted(j.job_id for j in jobs)
    assert duplicates == 0

    ledger = DeliveryLedger(database["email_deliveries"], lease_s=30)  # reads what the workers wrote

    async def all_sent() -> bool:
        return sum(entry["status"] == "sent" for entry in await ledger.entries()) == JOB_COUNT

    await eventually(all_sent, timeout_s=30, what="the ledger to show every job sent")


LOADED_JOBS = 1_000
PROVIDER_LATENCY_S = 0.2


async def test_kill_9_with_64_jobs_in_flight_at_200_ms_loses_nothing_and_sends_nothing_twice(
    start_worker: Any, publisher: JobPublisher, topics: TopicNames, fake_resend: FakeResend, run_id: str
) -> None:
    fake_resend.state.latency_s = PROVIDER_LATENCY_S
    jobs = [mixed_job(i, run_id) for i in range(LOADED_JOBS)]
    worker = start_worker(EMAIL_CONCURRENCY="64")
    for job in jobs:
        await publisher.email(job, topic=topics.email_jobs.main)
    await eventually(lambda: len(fake_resend.deliveries) >= 300, timeout_s=120, what="300 deliveries")
    worker.kill()
    print(f"\nkill -9 with 64 in flight after {len(fake_resend.deliveries)} of {LOADED_JOBS} deliveries")

    start_worker(EMAIL_CONCURRENCY="64")
    await eventually(
        lambda: len(fake_resend.deliveries_by_key()) >= LOADED_JOBS, timeout_s=180, what="every job delivered"
    )
    by_key = fake_resend.deliveries_by_key()
    assert sorted(by_key) == sorted(j.job_id for j in jobs)
    assert sum(len(d) - 1 for d in by_key.values()) == 0, "no job may be sent twice"


async def test_sigterm_under_load_drains_in_flight_jobs_and_misroutes_nothing(
    start_worker: Any, publisher: JobPublisher, topics: TopicNames, fake_resend: FakeResend, run_id: str
) -> None:
    fake_resend.state.latency_s = PROVIDER_LATENCY_S
    jobs = [mixed_job(i, run_id) for i in range(LOADED_JOBS)]
    env = {"EMAIL_CONCURRENCY": "64", "SHUTDOWN_GRACE_S": "10"}
    worker = start_worker(**env)
    for job in jobs:
        await publisher.email(job, topic=topics.email_jobs.main)
    await eventually(lambda: len(fake_resend.deliveries) >= 300, timeout_s=120, what="300 deliveries")

    started_s = time.monotonic()
    worker.stop(timeout_s=60)
    exit_s = time.monotonic() - started_s
    print(
        f"\nSIGTERM with 64 in flight: exited in {exit_s:.1f}s after {len(fake_resend.deliveries)} deliveries"
    )
    assert worker.proc is not None
    assert worker.proc.returncode == 0, worker.log_since_start()[-3000:]
    assert exit_s < 10 + 5, "in-flight jobs get SHUTDOWN_GRACE_S, then the worker exits"
    retried = await records_in(KAFKA, topics.email_jobs.retry)
    assert retried == [], "the shutdown itself must not push jobs to the retry topic"

    start_worker(**env)
    await eventually(
        lambda: len(fake_resend.deliveries_by_key()) >= LOADED_JOBS, timeout_s=180, what="every job delivered"
    )
    by_key = fake_resend.deliveries_by_key()
    assert sorted(by_key) == sorted(j.job_id for j in jobs)
    assert sum(len(d) - 1 for d in by_key.values()) == 0, "no job may be sent twice"
