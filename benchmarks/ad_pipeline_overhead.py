"""Per-job cost of the ad pipeline outside the model call.

    .venv/bin/python -m benchmarks.ad_pipeline_overhead [--jobs 100]

Needs `make services`. Runs the worker against the local fake OpenAI server (which
answers at once), publishes N ad jobs, and waits for N results on `ad-results`. The
model call's own time is what the store records as `generation_ms`; the rest of the
wall time per job is the pipeline: Kafka in and out, decoding, the claim, the store
writes, publishing the result and committing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from pymongo import AsyncMongoClient

from processors.ads.jobs import AdJob
from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.kafka_tools import delete_topics
from tests.integration.worker import WorkerProcess

KAFKA = "127.0.0.1:9092"
MONGODB_URL = "mongodb://127.0.0.1:27017"


def job(run_id: str, i: int) -> AdJob:
    return AdJob.model_validate(
        {
            "job_id": f"{run_id}-{i}",
            "user_id": f"u-{i % 10}",
            "product": {"name": f"Lamp {i}", "description": "A dimmable desk lamp."},
            "audience": "students",
            "platform": "GOOGLE_SEARCH",
            "variants": 2,
        }
    )


async def main(count: int) -> None:
    run_id = uuid.uuid4().hex[:8]
    topics = TopicNames.with_prefix(f"b{run_id}.")
    fake = FakeOpenAI().start()
    log = Path(f"/tmp/bench-ads-{run_id}.log")
    log.touch()
    env = {
        "KAFKA_TOPIC_PREFIX": f"b{run_id}.",
        "KAFKA_GROUP_ID": f"bench-{run_id}",
        "MONGODB_DATABASE": f"bench_{run_id}",
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_MODEL": fake.model,
        "LOG_LEVEL": "INFO",
    }
    worker = WorkerProcess(env, log).start()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGODB_URL)
    try:
        results = AIOKafkaConsumer(topics.ad_results, bootstrap_servers=KAFKA, auto_offset_reset="earliest")
        await results.start()
        async with JobPublisher(KAFKA) as publisher:
            await publisher.ad(job(run_id, -1), topic=topics.ad_jobs.main)  # warm-up
            await results.getone()
            started_s = time.monotonic()
            for i in range(count):
                await publisher.ad(job(run_id, i), topic=topics.ad_jobs.main)
            for _ in range(count):
                await results.getone()
            wall_s = time.monotonic() - started_s
        await results.stop()
        documents = await mongo[f"bench_{run_id}"]["ads"].find({"job_id": {"$ne": f"{run_id}--1"}}).to_list()
        model_ms = [d["generation_ms"] for d in documents]
        per_job_ms = wall_s * 1000 / count
        model_mean_ms = statistics.mean(model_ms)
        print(f"{count} ad jobs in {wall_s:.2f}s: {count / wall_s:.1f} jobs/s, {per_job_ms:.1f} ms per job")
        print(f"model call (fake server, incl. LangChain + HTTP): mean {model_mean_ms:.1f} ms")
        print(f"pipeline overhead outside the model call: {per_job_ms - model_mean_ms:.1f} ms per job")
    finally:
        worker.stop()
        fake.stop()
        await mongo.drop_database(f"bench_{run_id}")
        await mongo.close()
        await delete_topics(KAFKA, topics.all)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100)
    asyncio.run(main(parser.parse_args().jobs))
