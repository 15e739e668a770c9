"""Ad jobs on the real broker and store: each model outcome ends where it should."""

from __future__ import annotations

import json
from collections import defaultdict, deque
from typing import Any

from processors.ads.jobs import AdJob
from processors.ads.store import AdStore
from streams.producer import JobPublisher
from streams.retry import headers as h
from streams.topics import TopicNames
from tests.fakes.openai_server import Behaviour, FakeOpenAI, Request
from tests.fakes.resend_server import FakeResend
from tests.integration.conftest import KAFKA
from tests.integration.kafka_tools import group_lag, records_in
from tests.integration.worker import run_cli
from tests.polling import eventually


def ad_job(job_id: str, product: str, *, email: str | None = None, user_id: str = "u-1") -> AdJob:
    return AdJob.model_validate(
        {
            "job_id": job_id,
            "user_id": user_id,
            "product": {"name": product, "description": "A dimmable LED desk lamp that folds flat."},
            "audience": "students who study late",
            "tone": "warm",
            "platform": "GOOGLE_SEARCH",
            "variants": 2,
            "notify": {"email": email, "live": True},
        }
    )


class ScriptByProduct:
    """Answers each request by the product named in its prompt: one queue per product."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[str | Behaviour]] = defaultdict(deque)
        self.calls: dict[str, int] = defaultdict(int)

    def __call__(self, request: Request) -> Behaviour | str:
        for product, queue in self.queues.items():
            if product in request.text():
                self.calls[product] += 1
                return queue.popleft() if queue else "good"
        return "good"


def model_env(fake_openai: FakeOpenAI) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": "sk-test-key",
        "OPENAI_BASE_URL": fake_openai.url,
        "OPENAI_MODEL": fake_openai.model,
        "OPENAI_TIMEOUT_S": "5",
        "AD_LEASE_S": "30",
        "AD_RETRY_BASE_MS": "200",
        "AD_RETRY_CAP_MS": "1000",
    }


async def results_for(topics: TopicNames, job_id: str) -> list[dict[str, Any]]:
    records = await records_in(KAFKA, topics.ad_results)
    return [r for r in (json.loads(rec.record.value) for rec in records) if r["job_id"] == job_id]


async def test_each_model_outcome_ends_where_it_should(
    start_worker: Any,
    publisher: JobPublisher,
    topics: TopicNames,
    fake_openai: FakeOpenAI,
    database: Any,
    run_id: str,
) -> None:
    script = ScriptByProduct()
    fake_openai.default = script
    cases = {
        "Good lamp": [],
        "Repaired lamp": ["over_limit", "good"],
        "Limited lamp": ["rate_limited", "good"],
        "Flaky lamp": ["server_error", "good"],
        "Refused lamp": ["refusal"],
        "Unfixable lamp": ["over_limit", "over_limit"],
    }
    for product, behaviours in cases.items():
        script.queues[product].extend(behaviours)
    start_worker(**model_env(fake_openai))
    jobs = {product: ad_job(f"{run_id}-{i}", product) for i, product in enumerate(cases)}
    for job in jobs.values():
        await publisher.ad(job, topic=topics.ad_jobs.main)

    async def all_results() -> bool:
        records = await records_in(KAFKA, topics.ad_results)
        return len({json.loads(r.record.value)["job_id"] for r in records}) >= len(jobs)

    await eventually(all_results, timeout_s=60, what="a result for every ad job")
    ads = AdStore(database["ads"])  # succeeded copies in `ads`, the rest in its claims
    for product in ("Good lamp", "Repaired lamp", "Limited lamp", "Flaky lamp"):
        [result] = await results_for(topics, jobs[product].job_id)
        assert result["status"] == "succeeded", product
        assert len(result["variants"]) == 2
        assert all(len(v["headline"]) <= 30 and len(v["body"]) <= 90 for v in result["variants"])
        document = await ads.get(jobs[product].job_id)
        assert document is not None
        assert document["status"] == "succeeded"
        assert document["model"] == fake_openai.model
    assert script.calls["Good lamp"] == 1
    assert script.calls["Repaired lamp"] == 2
    assert script.calls["Limited lamp"] == 2, "the 429 is made again in-process, after its retry-after"

    dead = {json.loads(r.record.value)["job_id"]: r for r in await records_in(KAFKA, topics.ad_jobs.dlq)}
    for product, error_class in (("Refused lamp", "Refusal"), ("Unfixable lamp", "OutOfBounds")):
        job_id = jobs[product].job_id
        [result] = await results_for(topics, job_id)
        assert result["status"] == "failed"
        assert result["error_class"] == error_class
        assert dead[job_id].record.headers[h.DLQ_REASON] == "permanent"
        assert dead[job_id].record.headers[h.ERROR_CLASS] == error_class
        failed = await ads.get(job_id)
        assert failed is not None
        assert failed["status"] == "failed"
    retried = {json.loads(r.record.value)["job_id"] for r in await records_in(KAFKA, topics.ad_jobs.retry)}
    assert jobs["Limited lamp"].job_id not in retried, "a rate limit alone costs the job no attempt"
    assert jobs["Flaky lamp"].job_id in retried


async def test_a_redelivered_succeeded_job_is_republished_without_a_model_call(
    start_worker: Any, publisher: JobPublisher, topics: TopicNames, fake_openai: FakeOpenAI, run_id: str
) -> None:
    start_worker(**model_env(fake_openai))
    job = ad_job(f"{run_id}-once", "Idempotent lamp")
    await publisher.ad(job, topic=topics.ad_jobs.main)
    await eventually(lambda: results_for(topics, job.job_id), timeout_s=30, what="the first result")
    calls_after_first = fake_openai.request_count

    await publisher.ad(job, topic=topics.ad_jobs.main)
    results = await eventually(
        lambda: _at_least(results_for(topics, job.job_id), 2), timeout_s=30, what="the result again"
    )
    assert fake_openai.request_count == calls_after_first == 1
    assert results[0]["variants"] == results[1]["variants"]


async def _at_least(found: Any, count: int) -> Any:
    items = await found
    return items if len(items) >= count else None


async def test_without_a_model_jobs_are_dead_lettered_and_replay_once_configured(
    start_worker: Any,
    publisher: JobPublisher,
    topics: TopicNames,
    fake_openai: FakeOpenAI,
    worker_env: dict[str, str],
    run_id: str,
) -> None:
    worker = start_worker()  # no OPENAI_MODEL
    assert "no model configured" in worker.log()
    job = ad_job(f"{run_id}-nomodel", "Patient lamp")
    await publisher.ad(job, topic=topics.ad_jobs.main)
    [letter] = await eventually(
        lambda: records_in(KAFKA, topics.ad_jobs.dlq), timeout_s=30, what="a dead letter"
    )
    assert letter.record.headers[h.ERROR_CLASS] == "NoModelConfigured"
    assert letter.record.headers[h.ERROR_MESSAGE] == "no model configured"
    [failed] = await eventually(lambda: results_for(topics, job.job_id), timeout_s=30, what="a failed result")
    assert failed["status"] == "failed"
    assert fake_openai.request_count == 0, "no fake copy, no model call"
    worker.stop()

    start_worker(**model_env(fake_openai))
    await run_cli("dlq", "replay", "--topic", topics.ad_jobs.dlq, env=worker_env)
    results = await eventually(
        lambda: _at_least(results_for(topics, job.job_id), 2), timeout_s=30, what="the replayed result"
    )
    assert results[-1]["status"] == "succeeded"


async def test_an_ad_job_with_email_notification_sends_an_ad_ready_email(
    start_worker: Any,
    publisher: JobPublisher,
    topics: TopicNames,
    fake_openai: FakeOpenAI,
    fake_resend: FakeResend,
    run_id: str,
) -> None:
    start_worker(**model_env(fake_openai))
    job = ad_job(f"{run_id}-mail", "Mailed lamp", email="ada@example.com")
    await publisher.ad(job, topic=topics.ad_jobs.main)
    [delivery] = await eventually(lambda: fake_resend.deliveries, timeout_s=30, what="the AD_READY email")
    assert delivery.idempotency_key == f"ad-ready-{job.job_id}"
    assert delivery.body["to"] == ["ada@example.com"]
    assert delivery.body["subject"] == "Your ad copy for Mailed lamp is ready"
    [result] = await results_for(topics, job.job_id)
    for variant in result["variants"]:
        assert variant["headline"] in delivery.body["text"]

    # The same result again (a redelivery) makes no second email.
    await publisher.send_raw(
        topics.ad_results, json.dumps(result).encode(), key=job.user_id.encode(), headers={}
    )

    async def caught_up() -> bool:
        return (
            await group_lag(KAFKA, f"worker-{run_id}", topics.email_jobs.main) == 0
            and await group_lag(KAFKA, f"worker-{run_id}.email-notifier", topics.ad_results) == 0
        )

    await eventually(caught_up, timeout_s=30, what="the notifier and email path to catch up")
    assert len(fake_resend.deliveries) == 1


async def dead_letters_for(topics: TopicNames, job_id: str) -> list[Any]:
    records = await records_in(KAFKA, topics.ad_jobs.dlq)
    return [r for r in records if json.loads(r.record.value)["job_id"] == job_id]


async def test_a_redelivered_failed_job_is_answered_again_without_a_model_call(
    start_worker: Any,
    publisher: JobPublisher,
    topics: TopicNames,
    fake_openai: FakeOpenAI,
    database: Any,
    run_id: str,
) -> None:
    script = ScriptByProduct()
    script.queues["Refused lamp"].append("refusal")
    fake_openai.default = script
    start_worker(**model_env(fake_openai))
    job = ad_job(f"{run_id}-refused", "Refused lamp")
    await publisher.ad(job, topic=topics.ad_jobs.main)
    await eventually(lambda: dead_letters_for(topics, job.job_id), timeout_s=30, what="the dead letter")
    assert fake_openai.request_count == 1

    await publisher.ad(job, topic=topics.ad_jobs.main)  # the same job again: a redelivery
    results = await eventually(
        lambda: _at_least(results_for(topics, job.job_id), 2), timeout_s=30, what="the failed result again"
    )
    assert [(r["status"], r["state"], r["error_class"]) for r in results] == [
        ("failed", "failed", "Refusal")
    ] * 2
    # Its dead letter is written again too: one lost to a crash after the result is not lost.
    letters = await eventually(
        lambda: _at_least(dead_letters_for(topics, job.job_id), 2), timeout_s=30, what="the dead letter again"
    )
    assert [letter.record.headers[h.ERROR_CLASS] for letter in letters] == ["Refusal"] * 2
    assert fake_openai.request_count == 1, "no model call for a job that ended"
    document = await AdStore(database["ads"]).stored(job.job_id)
    assert document is not None
    assert (document["status"], len(document["runs"])) == ("failed", 1)


async def test_a_job_that_runs_out_of_attempts_ends_failed_with_one_dead_letter(
    start_worker: Any,
    publisher: JobPublisher,
    topics: TopicNames,
    fake_openai: FakeOpenAI,
    database: Any,
    run_id: str,
) -> None:
    fake_openai.default = "server_error"
    start_worker(**model_env(fake_openai), AD_RETRY_MAX_ATTEMPTS="2")
    job = ad_job(f"{run_id}-flaky", "Broken lamp")
    await publisher.ad(job, topic=topics.ad_jobs.main)
    [failed] = await eventually(
        lambda: results_for(topics, job.job_id), timeout_s=30, what="the failed result"
    )
    assert (failed["status"], failed["state"], failed["error_class"]) == ("failed", "failed", "ServerError")

    async def settled() -> bool:
        return await group_lag(KAFKA, f"worker-{run_id}.ads", topics.ad_jobs.main) == 0

    await eventually(settled, timeout_s=30, what="the ad consumer to commit")
    [letter] = await dead_letters_for(topics, job.job_id)
    assert letter.record.headers[h.DLQ_REASON] == "attempts-exhausted"
    assert fake_openai.request_count == 2
    document = await AdStore(database["ads"]).get(job.job_id)
    assert document is not None
    assert (document["status"], document["reason"], document["attempts"]) == (
        "failed",
        "attempts-exhausted",
        2,
    )


async def test_a_replay_runs_a_failed_job_again_and_the_document_keeps_both_runs(
    start_worker: Any,
    publisher: JobPublisher,
    topics: TopicNames,
    fake_openai: FakeOpenAI,
    database: Any,
    worker_env: dict[str, str],
    run_id: str,
) -> None:
    script = ScriptByProduct()
    # Fails for good, then (replayed) fails once more in passing, then succeeds.
    script.queues["Stubborn lamp"].extend(["over_limit", "over_limit", "server_error", "good"])
    fake_openai.default = script
    start_worker(**model_env(fake_openai))
    job = ad_job(f"{run_id}-replayed", "Stubborn lamp")
    await publisher.ad(job, topic=topics.ad_jobs.main)
    [letter] = await eventually(
        lambda: dead_letters_for(topics, job.job_id), timeout_s=30, what="the dead letter"
    )
    assert letter.record.headers[h.ERROR_CLASS] == "OutOfBounds"

    await run_cli("dlq", "replay", "--topic", topics.ad_jobs.dlq, env=worker_env)
    results = await eventually(
        lambda: _at_least(results_for(topics, job.job_id), 2), timeout_s=30, what="the replayed result"
    )
    assert [(r["status"], r["state"]) for r in results] == [("failed", "failed"), ("succeeded", "succeeded")]
    assert fake_openai.request_count == 4
    mark = f"{topics.ad_jobs.dlq}:{letter.ref}"
    document = await AdStore(database["ads"]).stored(job.job_id)
    assert document is not None
    assert document["status"] == "succeeded"
    assert [(r["run"], r["replayed_from"], r["status"], r["attempts"]) for r in document["runs"]] == [
        (1, None, "failed", 1),
        (2, mark, "succeeded", 2),  # its retry kept the replay's mark
    ]
    assert document["model_calls"] == 3, "two answers out of bounds and the good one; the 500 cost nothing"
    assert document["token_usage"]["input_tokens"] > 0

    # The replayed record again (say, re-read after a crash): answered, no model call.
    await publisher.send_raw(
        topics.ad_jobs.main, letter.record.value, key=letter.record.key, headers={h.REPLAYED_FROM: mark}
    )
    results = await eventually(
        lambda: _at_least(results_for(topics, job.job_id), 3), timeout_s=30, what="the result once more"
    )
    assert results[-1]["status"] == "succeeded"
    assert results[-1]["variants"] == results[1]["variants"]
    assert fake_openai.request_count == 4
