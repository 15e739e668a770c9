"""The ad example on the real broker and store, answered at the longest its schema allows."""

from __future__ import annotations

import json
from typing import Any

from processors.ads.jobs import _EXAMPLE_JOB, AdJob
from processors.ads.platforms import LIMITS, Platform
from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import KAFKA
from tests.integration.kafka_tools import records_in
from tests.integration.test_ads import model_env
from tests.polling import eventually


async def test_the_longest_answers_the_schemas_allow_succeed_on_the_first_call(
    start_worker: Any, publisher: JobPublisher, topics: TopicNames, fake_openai: FakeOpenAI, run_id: str
) -> None:
    fake_openai.default = "longest"
    start_worker(**model_env(fake_openai))
    jobs = {
        platform: AdJob.model_validate(
            {**_EXAMPLE_JOB, "job_id": f"{run_id}-{platform.value}", "platform": platform}
        )
        for platform in Platform
    }
    for job in jobs.values():
        await publisher.ad(job, topic=topics.ad_jobs.main)

    async def results() -> dict[str, dict[str, Any]] | None:
        found = {}
        for record in await records_in(KAFKA, topics.ad_results):
            result = json.loads(record.record.value)
            found[result["job_id"]] = result
        return found if len(found) >= len(jobs) else None

    found = await eventually(results, timeout_s=60, what="a result for the example on every platform")
    for platform, job in jobs.items():
        result = found[job.job_id]
        assert result["status"] == "succeeded", (platform, result.get("error"))
        limits = LIMITS[platform]
        assert len(result["variants"]) == job.variants
        for variant in result["variants"]:
            assert len(variant["headline"]) == limits.headline_chars
            assert len(variant["body"]) == limits.body_chars
            assert (variant["call_to_action"] is None) == (not limits.call_to_actions)
    # One call a job: no repair round, no retry.
    assert fake_openai.request_count == len(jobs)
    assert await records_in(KAFKA, topics.ad_jobs.retry) == []
    assert await records_in(KAFKA, topics.ad_jobs.dlq) == []
