"""Integration fixtures: the real Kafka broker and MongoDB-wire store, started by `make services`.

Each test gets its own topic prefix and database, so tests and repeated runs never see
each other's messages. These tests fail (never skip) when the servers are not there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.fakes.resend_server import FakeResend
from tests.integration.kafka_tools import check_kafka, delete_topics
from tests.integration.worker import WorkerProcess

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def servers() -> dict[str, str]:
    import asyncio

    async def check() -> None:
        await check_kafka(KAFKA)
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            MONGODB_URL, serverSelectionTimeoutMS=10_000
        )
        try:
            await client.admin.command("ping")
        finally:
            await client.close()

    try:
        asyncio.run(check())
    except Exception as error:
        pytest.fail(f"integration servers not reachable ({error!r}); start them with `make services`")
    return {"KAFKA_BOOTSTRAP_SERVERS": KAFKA, "MONGODB_URL": MONGODB_URL}


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def topics(servers: dict[str, str], run_id: str) -> AsyncIterator[TopicNames]:
    names = TopicNames.with_prefix(f"t{run_id}.")
    yield names
    await delete_topics(KAFKA, names.all)


@pytest.fixture
async def database(servers: dict[str, str], run_id: str) -> AsyncIterator[Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGODB_URL, tz_aware=True)
    db = client[f"test_{run_id}"]
    yield db
    await client.drop_database(db.name)
    await client.close()


@pytest.fixture
def worker_env(
    servers: dict[str, str], run_id: str, fake_resend: FakeResend, tmp_path: Path
) -> dict[str, str]:
    return {
        **servers,
        "KAFKA_TOPIC_PREFIX": f"t{run_id}.",
        "KAFKA_GROUP_ID": f"worker-{run_id}",
        "MONGODB_DATABASE": f"test_{run_id}",
        "RESEND_API_KEY": "re_test_key",
        "RESEND_API_URL": fake_resend.url,
        "RESEND_TIMEOUT_S": "5",
        # The suite scripts the fake by job id and counts its requests: one email a call,
        # no rate budget. The budget and batch tests set their own.
        "RESEND_RATE_LIMIT_PER_S": "1000",
        "RESEND_BATCH_MAX": "1",
        "EMAIL_SEND_LEASE_S": "6",
        "OUTBOX_DIR": str(tmp_path / "outbox"),
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path, topics: TopicNames) -> Iterator[Any]:
    # Depends on `topics`: the workers stop before their topics are deleted.
    started: list[WorkerProcess] = []

    def start(**overrides: str) -> WorkerProcess:
        worker = WorkerProcess({**worker_env, **overrides}, tmp_path / "worker.log").start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
async def publisher(servers: dict[str, str]) -> AsyncIterator[JobPublisher]:
    async with JobPublisher(KAFKA) as job_publisher:
        yield job_publisher
