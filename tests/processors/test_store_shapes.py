"""The exact bulk calls the claims make, on the real store, at the sizes they make them.

FerretDB v1 hangs on some bulk shapes (a `bulk_write` of ~100 `UpdateOne`) and serves
others fine; these tests run each shape the worker uses with a deadline, so a store that
hangs fails the test instead of blocking the suite:

- `insert_many(ordered=False)` of up to `BatchSettings.max_batch` documents (and twice
  that), with `_id`s already stored and `_id`s repeated inside the batch, mapped back to
  the right documents (`processors.store.insert_each`);
- `find({"job_id": {"$in": [...]}})` for as many jobs (a collided claim's read);
- `create_index("job_id")`, `list_collection_names`, `drop_collection` (buckets).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from processors.claims import BatchSettings, ClaimOutcome, Claims
from processors.store import Document, insert_each

pytestmark = pytest.mark.integration

MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")
DEADLINE_S = 30.0
OLDER_DOCS = 2_000
SIZES = [64, BatchSettings().max_batch, 500]
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def database() -> AsyncIterator[AsyncDatabase[Document]]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        MONGODB_URL, tz_aware=True, serverSelectionTimeoutMS=5_000, socketTimeoutMS=int(DEADLINE_S * 1000)
    )
    name = f"test_shapes_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


def doc(job_id: str, suffix: str = "") -> Document:
    return {
        "_id": job_id + suffix,
        "job_id": job_id,
        "kind": "claim",
        "attempt": 1,
        "at": NOW,
        "lease_until": NOW,
    }


async def prefilled(database: AsyncDatabase[Document], name: str) -> Any:
    collection = database[name]
    async with asyncio.timeout(DEADLINE_S):
        await collection.create_index("job_id")
        await collection.insert_many([doc(f"old-{i}") for i in range(OLDER_DOCS)], ordered=False)
    return collection


@pytest.mark.parametrize("size", SIZES)
async def test_an_unordered_insert_many_maps_each_duplicate_to_its_document(
    database: AsyncDatabase[Document], size: int
) -> None:
    collection = await prefilled(database, "bucket")
    batch = [doc(f"new-{i}") for i in range(size)]
    # Every 10th document is already stored; every 25th repeats the one before it.
    taken = set(range(0, size, 10))
    for i in taken:
        batch[i] = doc(f"old-{i}")
    repeated = {i for i in range(25, size, 25) if i not in taken and i - 1 not in taken}
    for i in repeated:
        batch[i] = doc(f"new-{i - 1}")
    async with asyncio.timeout(DEADLINE_S):
        results = await insert_each(collection, batch)
    failed = {i for i, result in enumerate(results) if result is not None}
    assert failed == taken | repeated
    assert all(isinstance(results[i], DuplicateKeyError) for i in failed)
    async with asyncio.timeout(DEADLINE_S):
        stored = await collection.count_documents({"_id": {"$regex": "^new-"}})
    assert stored == size - len(failed)


@pytest.mark.parametrize("size", SIZES)
async def test_a_batch_without_duplicates_inserts_everything(
    database: AsyncDatabase[Document], size: int
) -> None:
    collection = await prefilled(database, "bucket")
    async with asyncio.timeout(DEADLINE_S):
        results = await insert_each(collection, [doc(f"new-{i}", "#2") for i in range(size)])
    assert results == [None] * size


@pytest.mark.parametrize("size", SIZES)
async def test_a_find_by_job_id_in_a_list_returns_every_document_of_those_jobs(
    database: AsyncDatabase[Document], size: int
) -> None:
    collection = await prefilled(database, "bucket")
    async with asyncio.timeout(DEADLINE_S):
        await collection.insert_many([doc(f"old-{i}", "!") for i in range(0, OLDER_DOCS, 2)])
        found = await collection.find({"job_id": {"$in": [f"old-{i}" for i in range(size)]}}).to_list()
    assert len(found) == size + size // 2


async def test_buckets_are_created_listed_and_dropped(database: AsyncDatabase[Document]) -> None:
    async with asyncio.timeout(DEADLINE_S):
        await prefilled(database, "jobs_20260101")
        await database["jobs_20260102"].create_index("job_id")  # a bucket created by its index
        await database["jobs_20260101"].create_index("job_id")  # again: nothing to do
        assert {"jobs_20260101", "jobs_20260102"} <= set(await database.list_collection_names())
        await database.drop_collection("jobs_20260101")
        assert "jobs_20260101" not in await database.list_collection_names()


async def test_claims_of_a_full_batch_of_jobs_at_once_with_collisions(
    database: AsyncDatabase[Document],
) -> None:
    """The whole path at its largest: one batch of concurrent claims, a quarter of them
    for jobs already claimed (they collide and read), then their completions."""
    claims = Claims(database["jobs"], working="working", done="done")
    size = BatchSettings().max_batch
    async with asyncio.timeout(DEADLINE_S):
        await asyncio.gather(*(claims.claim(f"job-{i}", now=NOW, lease_s=30) for i in range(0, size, 4)))
        fresh = Claims(database["jobs"], working="working", done="done")  # another worker: no memo
        outcomes = await asyncio.gather(
            *(fresh.claim(f"job-{i}", now=NOW, lease_s=30) for i in range(size)), return_exceptions=True
        )
        held = [o for o in outcomes if isinstance(o, Exception)]
        assert len(held) == size // 4
        assert all(getattr(o, "error_class", None) == "ClaimHeld" for o in held)
        done = await asyncio.gather(
            *(
                fresh.finish(f"job-{i}", now=NOW)
                for i, o in enumerate(outcomes)
                if not isinstance(o, Exception)
            )
        )
        assert all(done)
        again = await asyncio.gather(
            *(fresh.claim(f"job-{i}", now=NOW, lease_s=30) for i in range(1, size, 4))
        )
        assert {c.outcome for c in again} == {ClaimOutcome.ALREADY_DONE}
        await claims.aclose()
        await fresh.aclose()
