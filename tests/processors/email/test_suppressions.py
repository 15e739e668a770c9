"""The suppression list on the real MongoDB-wire store: upserts, and a hot path that stays in memory."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from processors.email.suppressions import (
    COLLECTION,
    Suppression,
    SuppressionReason,
    Suppressions,
    normalize_address,
)
from processors.errors import TransientError
from tests.processors.email.store_commands import Commands

pytestmark = pytest.mark.integration

MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REFRESH_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def commands() -> Commands:
    return Commands()


@pytest.fixture
async def database(commands: Commands) -> AsyncIterator[Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        MONGODB_URL, tz_aware=True, event_listeners=[commands]
    )
    db = client[f"test_suppressions_{uuid.uuid4().hex[:8]}"]
    yield db
    await client.drop_database(db.name)
    await client.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def suppressions(database: Any, clock: Clock) -> Suppressions:
    return Suppressions(database[COLLECTION], refresh_s=REFRESH_S, clock_s=clock)


def test_an_address_is_normalized_to_its_bare_lower_case_form() -> None:
    assert normalize_address("  Ada@Example.COM ") == "ada@example.com"
    assert normalize_address("Ada Lovelace <Ada@Example.com>") == "ada@example.com"


async def test_add_is_an_upsert_that_keeps_the_first_reason(suppressions: Suppressions) -> None:
    assert await suppressions.add("Ada@Example.com", reason="bounced", source="msg_1", now=NOW)
    assert not await suppressions.add(
        " ada@example.com ", reason=SuppressionReason.COMPLAINED, source="msg_2", now=NOW + timedelta(hours=1)
    )
    assert await suppressions.entries() == [
        Suppression("ada@example.com", SuppressionReason.BOUNCED, "msg_1", NOW),
    ]


async def test_an_invalid_address_or_reason_is_refused(suppressions: Suppressions) -> None:
    with pytest.raises(ValueError, match="not an email address"):
        await suppressions.add("   ", reason="manual", source="cli", now=NOW)
    with pytest.raises(ValueError, match="spam"):
        await suppressions.add("ada@example.com", reason="spam", source="cli", now=NOW)


async def test_remove_says_whether_the_address_was_on_the_list(suppressions: Suppressions) -> None:
    await suppressions.add("ada@example.com", reason="manual", source="cli", now=NOW)
    assert await suppressions.is_suppressed("ADA@example.com")
    assert await suppressions.remove("Ada@Example.com")
    assert not await suppressions.remove("ada@example.com")
    assert not await suppressions.is_suppressed("ada@example.com")
    assert await suppressions.entries() == []


async def test_entries_are_oldest_first(suppressions: Suppressions) -> None:
    for i, address in enumerate(["c@example.com", "a@example.com", "b@example.com"]):
        await suppressions.add(address, reason="manual", source="cli", now=NOW + timedelta(minutes=i))
    assert [e.address for e in await suppressions.entries()] == [
        "c@example.com",
        "a@example.com",
        "b@example.com",
    ]


async def test_is_suppressed_reads_the_store_once_per_refresh_period_at_a_realistic_size(
    database: Any, suppressions: Suppressions, clock: Clock, commands: Commands
) -> None:
    # Given 2,000 suppressed addresses, written by another worker
    await database[COLLECTION].insert_many(
        [
            {"_id": f"user{i}@example.com", "reason": "bounced", "source": f"msg_{i}", "created_at": NOW}
            for i in range(2_000)
        ]
    )
    commands.counts.clear()

    # When 10,000 sends ask, 500 at a time, within one refresh period
    addresses = [f"user{i}@example.com" if i % 2 else f"other{i}@example.com" for i in range(10_000)]
    answers: list[bool] = []
    for start in range(0, len(addresses), 500):
        answers += await asyncio.gather(
            *(suppressions.is_suppressed(a) for a in addresses[start : start + 500])
        )
        clock.now_s += 0.01

    # Then every answer is right, from one read of the collection
    assert answers == [i % 2 == 1 and i < 2_000 for i in range(10_000)]
    assert suppressions.reads == 1
    assert commands.counts == Counter({("find", COLLECTION): 1})

    # And after the refresh period, one more read
    clock.now_s += REFRESH_S
    await asyncio.gather(*(suppressions.is_suppressed(a) for a in addresses[:500]))
    assert suppressions.reads == 2
    assert commands.counts == Counter({("find", COLLECTION): 2})


async def test_another_workers_addition_shows_within_the_refresh_period(database: Any, clock: Clock) -> None:
    mine = Suppressions(database[COLLECTION], refresh_s=REFRESH_S, clock_s=clock)
    theirs = Suppressions(database[COLLECTION], refresh_s=REFRESH_S, clock_s=clock)
    assert not await mine.is_suppressed("ada@example.com")

    await theirs.add("ada@example.com", reason="complained", source="msg_9", now=NOW)
    assert await theirs.is_suppressed("ada@example.com")  # its own change: at once
    assert not await mine.is_suppressed("ada@example.com")  # not read yet

    clock.now_s += REFRESH_S
    assert await mine.is_suppressed("ada@example.com")

    await theirs.remove("ada@example.com")
    clock.now_s += REFRESH_S
    assert not await mine.is_suppressed("ada@example.com")


async def test_a_failed_refresh_keeps_the_list_it_had_and_logs_once(
    database: Any, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGODB_URL, tz_aware=True)
    suppressions = Suppressions(client[database.name][COLLECTION], refresh_s=REFRESH_S, clock_s=clock)
    await suppressions.add("ada@example.com", reason="bounced", source="msg_1", now=NOW)
    assert await suppressions.is_suppressed("ada@example.com")

    # The store goes away
    await client.close()
    clock.now_s += REFRESH_S
    with caplog.at_level(logging.WARNING, logger="processors.email.suppressions"):
        answers = await asyncio.gather(*(suppressions.is_suppressed("ada@example.com") for _ in range(50)))
        assert await suppressions.is_suppressed("ada@example.com")  # no read again before the period

    assert all(answers)
    assert len([r for r in caplog.records if "could not refresh" in r.getMessage()]) == 1
    with pytest.raises(Exception):  # noqa: B017, PT011 - what a closed client raises
        await suppressions.refresh()


async def test_a_list_never_read_raises_a_transient_error_when_the_store_is_down() -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        "mongodb://127.0.0.1:1", serverSelectionTimeoutMS=200
    )
    try:
        suppressions = Suppressions(client["x"][COLLECTION], refresh_s=REFRESH_S)
        with pytest.raises(TransientError):
            await suppressions.is_suppressed("ada@example.com")
    finally:
        await client.close()


# --- a change made while a refresh reads (a store whose read waits for the test) ---


class _Cursor:
    def __init__(self, store: SlowStore) -> None:
        self._store = store

    async def to_list(self) -> list[dict[str, Any]]:
        snapshot = [{"_id": key} for key in self._store.keys]
        await self._store.release.wait()
        return snapshot


class _Deleted:
    def __init__(self, count: int) -> None:
        self.deleted_count = count


class SlowStore:
    """Enough of a collection: `find` takes its snapshot at once and answers when released."""

    def __init__(self, keys: set[str]) -> None:
        self.keys = set(keys)
        self.release = asyncio.Event()

    def find(self, *args: Any) -> _Cursor:
        return _Cursor(self)

    async def insert_one(self, document: dict[str, Any]) -> None:
        self.keys.add(document["_id"])

    async def delete_one(self, query: dict[str, Any]) -> _Deleted:
        present = query["_id"] in self.keys
        self.keys.discard(query["_id"])
        return _Deleted(int(present))


@pytest.fixture
def slow_store() -> SlowStore:
    return SlowStore({"old@example.com"})


async def test_a_change_made_during_a_refresh_is_not_lost(slow_store: SlowStore, clock: Clock) -> None:
    suppressions = Suppressions(slow_store, refresh_s=REFRESH_S, clock_s=clock)  # type: ignore[arg-type]
    slow_store.release.set()
    assert await suppressions.is_suppressed("old@example.com")

    # A refresh starts and reads the store as it is
    slow_store.release.clear()
    clock.now_s += REFRESH_S
    asking = asyncio.create_task(suppressions.is_suppressed("new@example.com"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    # Meanwhile this worker adds one address and removes another
    await suppressions.add("new@example.com", reason="manual", source="cli", now=NOW)
    await suppressions.remove("old@example.com")
    slow_store.release.set()

    # Then the read's older snapshot does not undo them
    assert await asking
    assert await suppressions.is_suppressed("new@example.com")
    assert not await suppressions.is_suppressed("old@example.com")
