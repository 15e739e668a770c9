"""A job cancelled at shutdown (or a revoke) is read again by the next owner: no ERROR, no traceback.

FastStream logs whatever a handler raises at ERROR with a traceback, through the worker's
broker logger, a `CancelledError` too. The dispatcher logs one line with the count of the
jobs it cancels; the per-job error lines must not be there. A job that fails is still
logged as an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faststream import FastStream

from streams.broker import build_broker
from streams.dispatch import DispatchOptions, dispatched_subscriber
from streams.settings import KafkaSettings
from tests.integration.conftest import KAFKA
from tests.integration.kafka_tools import delete_topics
from tests.polling import eventually

pytestmark = pytest.mark.integration

STUCK = 3


@pytest.fixture
async def topic(servers: dict[str, str], run_id: str) -> AsyncIterator[str]:
    name = f"t{run_id}.cancelled-jobs"
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    yield name
    await delete_topics(KAFKA, (name,))


async def test_jobs_cancelled_at_shutdown_log_one_warning_and_no_error(
    topic: str, run_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = build_broker(KafkaSettings(bootstrap_servers=KAFKA))
    started: list[int] = []

    @dispatched_subscriber(
        broker,
        topic,
        options=DispatchOptions(concurrency=8, shutdown_grace_s=0.2),
        group_id=f"cancelled-{run_id}",
        auto_offset_reset="earliest",
    )
    async def handle(body: dict[str, Any]) -> None:
        started.append(body["n"])
        if body["n"] == 0:
            if started.count(0) == 1:
                raise ValueError("no such template")  # once: run again in place, it ends
            return
        await asyncio.Event().wait()  # stuck until cancelled

    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all")
    await producer.start()
    try:
        for n in range(STUCK + 1):
            await producer.send_and_wait(topic, json.dumps({"n": n}).encode())
    finally:
        await producer.stop()

    app = FastStream(broker)
    with caplog.at_level(logging.INFO):
        await app.start()
        try:
            await eventually(
                lambda: len(set(started)) == STUCK + 1 and started.count(0) == 2,
                timeout_s=30,
                what="the stuck jobs started and the failing one ended",
            )
        finally:
            await app.stop()

    errors = [r for r in caplog.records if r.name == "streams.broker" and r.levelno >= logging.ERROR]
    assert errors, "the job that failed is logged as an error"
    assert all("ValueError" in r.getMessage() for r in errors), [r.getMessage() for r in errors]
    assert f"cancelling {STUCK} jobs still running; they will be read again" in caplog.text
