"""OpenAI's rate limits as one budget for the ad consumer group: two real workers
(`faststream run`) on the real broker and store, against the fake model limited per
rolling minute in requests and tokens, as OpenAI limits an account. Counted at the fake."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from processors.ads.jobs import AdJob
from streams.producer import JobPublisher
from streams.retry import headers as h
from streams.topics import TopicNames
from tests.fakes.openai_limits import RateLimits
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import KAFKA
from tests.integration.kafka_tools import records_in
from tests.polling import eventually

JOBS = 30
# 120 requests a minute, enforced over 10 s too as OpenAI may ("quantized": 20 in any 10 s),
# so that a burst without the budget meets 429s at once. ~1,200-1,900 tokens a call: a
# new process's token share grows to 120,000 over a minute, about 1.3 calls a second.
RPM = 120
TPM = 120_000
MAX_RATE_LIMITED_SHARE = 0.02
PLATFORMS = ("GOOGLE_SEARCH", "META_FEED", "LINKEDIN_SPONSORED", "X_POST")
OWNS = re.compile(r"ad-jobs: this process owns partitions \[([0-9, ]*)\] of (\d+)")


@pytest.fixture
def limited_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(limits=RateLimits(requests_per_min=RPM, tokens_per_min=TPM, quantum_s=10)).start()
    yield server
    server.stop()


def job(run_id: str, i: int) -> AdJob:
    return AdJob.model_validate(
        {
            "job_id": f"{run_id}-{i}",
            "user_id": f"user-{i}",  # one key each: spread over the partitions
            "product": {"name": f"Lamp {i}", "description": "A dimmable LED desk lamp that folds flat."},
            "audience": "students who study late",
            "tone": "warm",
            "platform": PLATFORMS[i % len(PLATFORMS)],
            "variants": 1 + i % 3,
        }
    )


def budget_env(fake: FakeOpenAI) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": "sk-test-key",
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_MODEL": fake.model,
        "OPENAI_TIMEOUT_S": "10",  # a job may still wait for the budget most of AD_LEASE_S
        "OPENAI_RPM": str(RPM),
        "OPENAI_TPM": str(TPM),
        "AD_CONCURRENCY": "8",
    }


async def succeeded(topics: TopicNames) -> set[str]:
    records = await records_in(KAFKA, topics.ad_results)
    results = [json.loads(r.record.value) for r in records]
    return {r["job_id"] for r in results if r["status"] == "succeeded"}


async def test_two_workers_share_the_model_budget_and_no_job_pays_an_attempt_for_it(
    start_worker: Any, publisher: JobPublisher, topics: TopicNames, limited_openai: FakeOpenAI, run_id: str
) -> None:
    env = budget_env(limited_openai)
    workers = await asyncio.gather(*(asyncio.to_thread(start_worker, **env) for _ in range(2)))
    jobs = [job(run_id, i) for i in range(JOBS)]
    began_s = time.monotonic()
    for each in jobs:
        await publisher.ad(each, topic=topics.ad_jobs.main)

    wanted = {j.job_id for j in jobs}

    async def all_succeeded() -> set[str]:
        done = await succeeded(topics)
        return done if wanted <= done else set()

    done = await eventually(all_succeeded, timeout_s=90, what="every job succeeded")
    limits = limited_openai.limits
    assert limits is not None
    counts = limits.counts
    most_requests, most_tokens = limits.most_in_any_window()
    print(
        f"\ntwo workers, {RPM} RPM / {TPM} TPM: {JOBS} jobs in {time.monotonic() - began_s:.1f} s, "
        f"{counts.accepted} calls accepted, "
        f"{counts.refused} refused; most in a minute: {most_requests} requests, {most_tokens} tokens"
    )
    assert done == wanted
    assert counts.rate_limited / (counts.accepted + counts.rate_limited) <= MAX_RATE_LIMITED_SHARE
    retried = await records_in(KAFKA, topics.ad_jobs.retry)
    assert [r.record.headers.get(h.ERROR_CLASS) for r in retried] == [], "no attempt used"
    assert await records_in(KAFKA, topics.ad_jobs.dlq) == []
    # Each worker had its share: both owned ad-jobs partitions at the end.
    shares = [OWNS.findall(w.log_since_start()) for w in workers]
    assert all(found and found[-1][0].strip() for found in shares), shares
