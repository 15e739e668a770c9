"""The provider's rate limit as one budget for the group, and batches that stay effectively
once: real workers (`faststream run`) on the real broker and store, against the fake Resend
limited per rolling second. Counted at the provider, by content."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from processors.email.jobs import SendOtpJob
from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.fakes.resend_server import FakeResend
from tests.integration.conftest import KAFKA
from tests.integration.jobs import mixed_job
from tests.integration.kafka_tools import records_in
from tests.polling import eventually

LIMIT_PER_S = 2
BUDGET_ENV = {
    "RESEND_RATE_LIMIT_PER_S": str(LIMIT_PER_S),
    "RESEND_BATCH_MAX": "100",
    "EMAIL_CONCURRENCY": "256",
}


def distinct_job(i: int, run_id: str) -> SendOtpJob:
    """A job for its own recipient: one key each, so that nothing waits on its key's order."""
    return SendOtpJob(
        type="SEND_OTP", job_id=f"{run_id}-{i}", to=f"person{i}@example.com", code=f"{100000 + i}"
    )


def assert_each_delivered_once(fake: FakeResend, expected: int) -> None:
    assert fake.duplicates_by_content() == {}, "no email may be delivered twice"
    assert len(fake.deliveries) == expected


def rate_limited_share(fake: FakeResend) -> float:
    statuses = fake.count_by_status()
    return statuses.get(429, 0) / max(1, sum(statuses.values()))


# A request may start up to 20 ms after its slot; one that reaches the fake later than that
# (a loaded machine) can meet a 429, then waits and goes again, costing no attempt. The
# benchmark holds the share to the 2 % over longer runs; here a few runs of 20
# requests must show the budget is shared: three processes that each took the whole
# budget would draw about two 429s per accepted request.
MAX_RATE_LIMITED_SHARE = 0.25


async def publish_all(publisher: JobPublisher, topics: TopicNames, jobs: list[Any]) -> None:
    for job in jobs:
        await publisher.email(job, topic=topics.email_jobs.main)


async def assert_all_sent_within_budget(fake: FakeResend, jobs: list[Any], *, timeout_s: float) -> None:
    """Every job delivered once, never more than the limit in a second, few 429s."""
    await eventually(
        lambda: len(fake.deliveries) >= len(jobs), timeout_s=timeout_s, what="every job delivered"
    )
    assert_each_delivered_once(fake, len(jobs))
    assert fake.max_accepted_in_any_window() <= LIMIT_PER_S
    assert rate_limited_share(fake) <= MAX_RATE_LIMITED_SHARE


async def test_one_worker_fills_batches_within_the_limit(
    start_worker: Any, publisher: JobPublisher, topics: TopicNames, fake_resend: FakeResend, run_id: str
) -> None:
    fake_resend.set_rate_limit(LIMIT_PER_S)
    fake_resend.state.latency_s = 0.05
    jobs = [distinct_job(i, run_id) for i in range(1_000)]
    await publish_all(publisher, topics, jobs)
    start_worker(**BUDGET_ENV)
    await assert_all_sent_within_budget(fake_resend, jobs, timeout_s=120)
    batches = [r.emails for r in fake_resend.requests if r.path == "/emails/batch" and r.status == 200]
    print(
        f"\none worker, limit {LIMIT_PER_S}/s: {len(fake_resend.requests)} requests, "
        f"batches of {sorted(batches)}, 429s {fake_resend.count_by_status().get(429, 0)}"
    )
    assert max(batches) >= 90, "jobs waiting for the budget are batched"
    assert await records_in(KAFKA, topics.email_jobs.dlq) == []
    assert await records_in(KAFKA, topics.email_jobs.retry) == [], "a rate limit alone never retries a job"


async def test_three_workers_share_one_budget(
    start_worker: Any, publisher: JobPublisher, topics: TopicNames, fake_resend: FakeResend, run_id: str
) -> None:
    fake_resend.set_rate_limit(LIMIT_PER_S)
    fake_resend.state.latency_s = 0.05
    jobs = [distinct_job(i, run_id) for i in range(1_500)]
    workers = [start_worker(**BUDGET_ENV) for _ in range(3)]
    await publish_all(publisher, topics, jobs)
    try:
        await assert_all_sent_within_budget(fake_resend, jobs, timeout_s=180)
    finally:
        print(f"\nthree workers, limit {LIMIT_PER_S}/s: requests by status {fake_resend.count_by_status()}")
    assert all(w.proc is not None and w.proc.poll() is None for w in workers)
    assert await records_in(KAFKA, topics.email_jobs.dlq) == []


CHAOS_JOBS = 2_000
KILLS = 6
CHAOS_ENV = {
    "RESEND_RATE_LIMIT_PER_S": "2",
    # Small batches at 2 calls a second: the run lasts past the minute of kills.
    "RESEND_BATCH_MAX": "10",
    "EMAIL_CONCURRENCY": "64",
    "RESEND_TIMEOUT_S": "2",
    "EMAIL_SEND_LEASE_S": "4",
    "EMAIL_RETRY_BASE_MS": "500",
    "EMAIL_RETRY_CAP_MS": "4000",
    "EMAIL_RETRY_MAX_ATTEMPTS": "30",
}


async def test_batches_under_kill_9_and_timeouts_lose_nothing_and_send_nothing_twice(
    start_worker: Any, publisher: JobPublisher, topics: TopicNames, fake_resend: FakeResend, run_id: str
) -> None:
    fake_resend.set_rate_limit(2)
    # 5 % of batch calls are answered only after the client gave up: outcome unknown.
    fake_resend.set_hang_probability(0.05, 2.5, seed=7, only_batches=True)
    jobs = [mixed_job(i, run_id) for i in range(CHAOS_JOBS)]
    await publish_all(publisher, topics, jobs)
    workers = [start_worker(**CHAOS_ENV) for _ in range(2)]
    await eventually(lambda: len(fake_resend.deliveries) > 0, timeout_s=60, what="a first delivery")
    started_s = time.monotonic()
    restarts: list[asyncio.Task[Any]] = []
    for kills in range(1, KILLS + 1):
        # The chaos schedule: a kill every 10 s, whatever the state, the two workers in turn;
        # each comes back while the other runs.
        await asyncio.sleep(started_s + 10 * kills - time.monotonic())
        victim = kills % 2
        if kills > 2:
            workers[victim] = await restarts[kills - 3]
        workers[victim].kill()
        print(
            f"kill -9 #{kills} at {time.monotonic() - started_s:.0f}s: "
            f"{len(fake_resend.deliveries)} delivered"
        )
        restarts.append(asyncio.create_task(asyncio.to_thread(start_worker, **CHAOS_ENV)))
    await asyncio.gather(*restarts)
    assert len(fake_resend.deliveries) < CHAOS_JOBS, "the kills came while there was work"
    await eventually(
        lambda: len({d.content_key for d in fake_resend.deliveries}) >= CHAOS_JOBS,
        timeout_s=240,
        what="every job delivered",
    )
    requests = fake_resend.requests
    print(
        f"\nchaos: {kills} kills, {len(requests)} requests, "
        f"{sum(1 for r in requests if r.hung_s)} hung, statuses {fake_resend.count_by_status()}"
    )
    assert_each_delivered_once(fake_resend, CHAOS_JOBS)
    assert fake_resend.max_accepted_in_any_window() <= 2
    assert sum(1 for r in requests if r.hung_s) >= 1, "some batch calls timed out"
    assert await records_in(KAFKA, topics.email_jobs.dlq) == []
