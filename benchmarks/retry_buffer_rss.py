"""Peak RSS of the worker while N retries wait in its retry buffer, against the idle worker.

    .venv/bin/python -m benchmarks.retry_buffer_rss [--count 10000]

Needs `make services`. Publishes N retry records due in 10 minutes straight to a fresh
`email-jobs.retry`, starts the worker, waits until its scheduler reports all N waiting,
and prints the RSS of the idle worker (baseline, same run) and with the buffer full.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from pathlib import Path

import psutil

from streams.producer import JobPublisher
from streams.retry import headers as h
from streams.topics import TopicNames
from tests.integration.kafka_tools import delete_topics
from tests.integration.worker import WorkerProcess

KAFKA = "127.0.0.1:9092"
WAITING = re.compile(r"retry buffer: (\d+) waiting")


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


async def main(count: int, max_records: int) -> None:
    run_id = uuid.uuid4().hex[:8]
    topics = TopicNames.with_prefix(f"b{run_id}.")
    log = Path(f"/tmp/bench-{run_id}.log")
    log.touch()
    env = {
        "KAFKA_TOPIC_PREFIX": f"b{run_id}.",
        "KAFKA_GROUP_ID": f"bench-{run_id}",
        "MONGODB_DATABASE": f"bench_{run_id}",
        "RETRY_BUFFER_MAX_RECORDS": str(max_records),
    }
    worker = WorkerProcess(env, log).start()
    try:
        baseline = rss_mib(worker.pid)
        due_at_ms = int(time.time() * 1000) + 10 * 60_000
        async with JobPublisher(KAFKA) as publisher:
            for i in range(count):
                job = {
                    "type": "SEND_OTP",
                    "job_id": f"{run_id}-{i}",
                    "to": f"u{i}@example.com",
                    "code": "123456",
                }
                headers = {
                    h.ATTEMPT: "1",
                    h.DUE_AT_MS: str(due_at_ms),
                    h.ORIGIN_TOPIC: topics.email_jobs.main,
                }
                await publisher.send_raw(
                    topics.email_jobs.retry, json.dumps(job).encode(), key=f"u{i}".encode(), headers=headers
                )
        peak = baseline
        expected = min(count, max_records)
        deadline = time.monotonic() + 120
        waiting = 0
        while time.monotonic() < deadline:
            peak = max(peak, rss_mib(worker.pid))
            found = WAITING.findall(log.read_text())
            waiting = int(found[-1]) if found else 0
            if waiting >= expected:
                break
            await asyncio.sleep(0.2)
        for _ in range(10):  # a few more samples with the buffer full
            peak = max(peak, rss_mib(worker.pid))
            await asyncio.sleep(0.2)
        print(f"retries waiting: {waiting} of {count} published (buffer limit {max_records})")
        print(f"idle worker RSS: {baseline:.1f} MiB; peak with the buffer full: {peak:.1f} MiB")
        per_retry_kib = (peak - baseline) * 1024 / max(waiting, 1)
        print(f"ratio: {peak / baseline:.2f}x; {per_retry_kib:.2f} KiB per waiting retry")
    finally:
        worker.stop()
        await delete_topics(KAFKA, topics.all)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--max-records", type=int, default=50_000)
    args = parser.parse_args()
    asyncio.run(main(args.count, args.max_records))
