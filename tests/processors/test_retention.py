"""Purging what the store would otherwise keep forever: the periodic runner, and `AdStore.purge`
on the real MongoDB-wire store at a realistic size."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure

from processors.ads.generator import GeneratedCopy, TokenUsage
from processors.ads.jobs import AdVariant
from processors.ads.store import AdStore
from processors.retention import Purger, task_name
from processors.store import Document
from tests.polling import eventually
from tests.processors.ads.conftest import make_job

MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RETENTION = timedelta(days=30)


class Recorder:
    """A purge task that records its cut-offs; fails while `failures` is above 0."""

    def __init__(self, deleted: int = 0, failures: int = 0) -> None:
        self.cutoffs: list[datetime] = []
        self.deleted = deleted
        self.failures = failures

    async def purge(self, older_than: datetime) -> int:
        self.cutoffs.append(older_than)
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionFailure("mongodb://worker:s3cret-pw@db:27017 unreachable")
        return self.deleted


async def test_tasks_run_at_start_with_the_retention_as_cut_off() -> None:
    task = Recorder()
    purger = Purger([task.purge], retention=RETENTION, clock=lambda: NOW)

    purger.start()
    try:
        await eventually(lambda: task.cutoffs, timeout_s=5, what="the first round")
    finally:
        await purger.close()

    assert task.cutoffs[0] == NOW - RETENTION


async def test_tasks_run_again_every_interval() -> None:
    task = Recorder()
    purger = Purger([task.purge], retention=RETENTION, interval_s=0.01, clock=lambda: NOW)

    purger.start()
    try:
        await eventually(lambda: len(task.cutoffs) >= 3, timeout_s=5, what="three rounds")
    finally:
        await purger.close()
    rounds = len(task.cutoffs)

    assert purger.rounds >= rounds - 1
    await purger.close()  # closing twice is fine


async def test_a_store_error_is_logged_without_its_message_and_tried_next_round(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing, other = Recorder(deleted=7, failures=1), Recorder(deleted=3)
    purger = Purger([failing.purge, other.purge], retention=RETENTION, clock=lambda: NOW)

    with caplog.at_level(logging.INFO, logger="processors.retention"):
        first = await purger.run_once()
        second = await purger.run_once()

    assert first == {task_name(failing.purge): None, task_name(other.purge): 3}
    assert second == {task_name(failing.purge): 7, task_name(other.purge): 3}
    messages = [record.getMessage() for record in caplog.records]
    assert "purge Recorder.purge failed: ConnectionFailure; trying again next round" in messages
    assert "purge Recorder.purge: 7 documents older than 2026-01-30T12:00+00:00 deleted" in messages
    assert not any("s3cret" in message for message in messages)


async def test_a_failing_round_does_not_stop_the_runner() -> None:
    task = Recorder(failures=2)
    purger = Purger([task.purge], retention=RETENTION, interval_s=0.01, clock=lambda: NOW)

    purger.start()
    try:
        await eventually(lambda: len(task.cutoffs) >= 3, timeout_s=5, what="a round after two failures")
    finally:
        await purger.close()


def test_retention_and_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Purger([], retention=timedelta(0))
    with pytest.raises(ValueError, match="positive"):
        Purger([], retention=RETENTION, interval_s=0)


# ---------------------------------------------------------------------- the real store

ADS_DOCS = 10_000


@pytest.fixture
async def database() -> AsyncIterator[AsyncDatabase[Document]]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(MONGODB_URL, tz_aware=True)
    name = f"test_retention_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


def generated() -> GeneratedCopy:
    return GeneratedCopy(
        variants=[
            AdVariant(headline="Glare-free light", body="No flicker. Folds flat.", call_to_action=None)
        ],
        model="gpt-fake",
        token_usage=TokenUsage(input_tokens=100, output_tokens=40, total_tokens=140),
        model_calls=1,
        elapsed_ms=850,
    )


async def succeed(store: AdStore, at: datetime) -> Document:
    job = make_job(notify={"email": "ada@example.com", "live": True})
    await store.claim(job, now=at, lease_s=60)
    return await store.mark_succeeded(job.job_id, generated(), now=at)


@pytest.mark.integration
async def test_purge_deletes_the_copies_completed_before_the_cut_off_and_keeps_the_rest(
    database: AsyncDatabase[Document],
) -> None:
    store = AdStore(database["ads"])
    cutoff = NOW - RETENTION
    # Two through the real API (so the purge's field is the one the store writes) ...
    old = await succeed(store, cutoff - timedelta(seconds=1))
    new = await succeed(store, cutoff)
    # ... and as many more copies of them as a busy month leaves, half of them too old.
    template: dict[str, Any] = {k: v for k, v in new.items() if k != "_id"}
    await database["ads"].insert_many(
        [
            {**template, "_id": f"ad-bulk-{i}", "completed_at": cutoff + timedelta(minutes=i - ADS_DOCS // 2)}
            for i in range(ADS_DOCS)
        ]
    )

    deleted = await store.purge(cutoff)

    assert deleted == 1 + ADS_DOCS // 2
    assert await database["ads"].find_one({"_id": old["_id"]}) is None
    assert await database["ads"].find_one({"_id": new["_id"]}) is not None
    left = await database["ads"].count_documents({})
    assert left == 1 + ADS_DOCS // 2
    assert await database["ads"].count_documents({"completed_at": {"$lt": cutoff}}) == 0
    assert await store.purge(cutoff) == 0
    await store.aclose()
