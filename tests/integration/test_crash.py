"""`kill -9` in the middle of 2,000 jobs, some waiting on retries: nothing lost, nothing doubled."""

from __future__ import annotations

from typing import Any

from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.fakes.resend_server import FakeResend, Reply
from tests.integration.jobs import mixed_job
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

    async def all_sent() -> bool:
        return await database["email_deliveries"].count_documents({"status": "sent"}) == JOB_COUNT

    await eventually(all_sent, timeout_s=30, what="the ledger to show every job sent")
