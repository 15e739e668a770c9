"""The delivery-event log on the real MongoDB-wire store: insert-only, replays told apart, daily buckets."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from processors.email.delivery_events import COLLECTION, DeliveryEvents
from processors.email.events import DeliveryEvent, EventKind
from tests.processors.email.store_commands import Commands
from tests.processors.stored import utc

pytestmark = pytest.mark.integration

MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")
# In the past: retention never drops by a clock ahead of the machine's.
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def event(
    event_id: str,
    email_id: str = "email-1",
    kind: EventKind = EventKind.DELIVERED,
    occurred_at: datetime = NOW,
    **extra: Any,
) -> DeliveryEvent:
    return DeliveryEvent(
        event_id=event_id,
        kind=kind,
        resend_type=f"email.{kind.value}",
        email_id=email_id,
        recipients=("ada@example.com",),
        occurred_at=occurred_at,
        received_at=occurred_at + timedelta(seconds=1),
        **extra,
    )


@pytest.fixture
def commands() -> Commands:
    return Commands()


@pytest.fixture
async def database(commands: Commands) -> AsyncIterator[Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        MONGODB_URL, tz_aware=True, event_listeners=[commands]
    )
    db = client[f"test_events_{uuid.uuid4().hex[:8]}"]
    yield db
    await client.drop_database(db.name)
    await client.close()


@pytest.fixture
async def events(database: Any) -> AsyncIterator[DeliveryEvents]:
    built = DeliveryEvents(database, retention_days=3)
    await built.prepare(NOW)
    yield built
    await built.aclose()


async def test_an_event_is_recorded_once_and_a_replay_is_told_apart(events: DeliveryEvents) -> None:
    assert await events.record(event("msg_1"), NOW)
    assert not await events.record(event("msg_1"), NOW)
    # Resend retrying a day later: the same bucket (the day it occurred), the same answer
    assert not await events.record(event("msg_1"), NOW + timedelta(days=1))


async def test_concurrent_replays_of_one_event_record_it_once(events: DeliveryEvents) -> None:
    outcomes = await asyncio.gather(*(events.record(event("msg_1"), NOW) for _ in range(20)))
    assert sorted(outcomes) == [False] * 19 + [True]


async def test_events_are_listed_by_email_oldest_first_with_no_address_stored(
    events: DeliveryEvents, database: Any
) -> None:
    bounce = {"bounce_type": "Permanent", "bounce_subtype": "General", "bounce_message": "no such user"}
    await events.record(
        event("msg_2", kind=EventKind.BOUNCED, occurred_at=NOW + timedelta(seconds=5), **bounce), NOW
    )
    await events.record(event("msg_1", kind=EventKind.SENT), NOW)
    await events.record(event("msg_3", email_id="email-2"), NOW)

    found = await events.for_email_ids(["email-1", "email-9"])

    assert utc(found) == {
        "email-1": [
            {
                "event_id": "msg_1",
                "email_id": "email-1",
                "kind": "sent",
                "resend_type": "email.sent",
                "occurred_at": NOW,
                "bounce_type": None,
                "bounce_subtype": None,
                "recorded_at": NOW,
            },
            {
                "event_id": "msg_2",
                "email_id": "email-1",
                "kind": "bounced",
                "resend_type": "email.bounced",
                "occurred_at": NOW + timedelta(seconds=5),
                "bounce_type": "Permanent",
                "bounce_subtype": "General",
                "recorded_at": NOW,
            },
        ]
    }
    stored = [
        doc
        for name in await database.list_collection_names()
        for doc in await database[name].find().to_list()
    ]
    assert len(stored) == 3
    assert "example.com" not in repr(stored)
    assert "no such user" not in repr(stored)


async def test_erase_deletes_the_events_of_those_emails_only(events: DeliveryEvents) -> None:
    await events.record(event("msg_1"), NOW)
    await events.record(event("msg_2", occurred_at=NOW - timedelta(days=1)), NOW)
    await events.record(event("msg_3", email_id="email-2"), NOW)

    assert await events.erase(["email-1"]) == 2
    assert await events.erase(["email-1"]) == 0
    assert await events.erase([]) == 0
    assert list(await events.for_email_ids(["email-1", "email-2"])) == ["email-2"]


async def test_buckets_are_daily_by_when_the_event_occurred_and_old_ones_are_dropped(
    events: DeliveryEvents, database: Any
) -> None:
    # Given events of the last three days, one too old to keep, and one dated ahead
    for days_ago in (0, 1, 2):
        await events.record(event(f"msg_{days_ago}", occurred_at=NOW - timedelta(days=days_ago)), NOW)
    await events.record(event("msg_old", occurred_at=NOW - timedelta(days=40)), NOW)
    await events.record(event("msg_ahead", occurred_at=NOW + timedelta(days=9)), NOW)
    assert sorted(n for n in await database.list_collection_names() if n.startswith(COLLECTION)) == [
        f"{COLLECTION}_20260308",  # the oldest kept: msg_2 and msg_old
        f"{COLLECTION}_20260309",
        f"{COLLECTION}_20260310",
        f"{COLLECTION}_20260311",  # a day ahead at most: msg_ahead
    ]

    # When two days pass
    dropped = await events.prepare(NOW + timedelta(days=2))

    # Then the buckets older than three days are gone, with their events
    assert dropped == [f"{COLLECTION}_20260308", f"{COLLECTION}_20260309"]
    found = await events.for_email_ids(["email-1"])
    assert [e["event_id"] for e in found["email-1"]] == ["msg_0", "msg_ahead"]


async def test_a_new_day_rotates_the_buckets_on_its_own(events: DeliveryEvents, database: Any) -> None:
    await events.record(event("msg_1", occurred_at=NOW - timedelta(days=2)), NOW)
    assert await events.record(event("msg_2", occurred_at=NOW + timedelta(days=2)), NOW + timedelta(days=2))
    names = sorted(n for n in await database.list_collection_names() if n.startswith(COLLECTION))
    assert names == [f"{COLLECTION}_20260310", f"{COLLECTION}_20260312"]  # 20260308 (msg_1) dropped


async def test_5000_concurrent_events_are_recorded_with_a_few_bulk_inserts_and_no_reads(
    events: DeliveryEvents, commands: Commands
) -> None:
    batch = [event(f"msg_{i}", email_id=f"email-{i % 1000}") for i in range(5_000)]
    commands.counts.clear()

    first = await asyncio.gather(*(events.record(e, NOW) for e in batch))
    again = await asyncio.gather(*(events.record(e, NOW) for e in batch))

    assert first == [True] * 5_000
    assert again == [False] * 5_000
    inserts = commands.named("insert")
    assert inserts <= 2 * 5_000 / 100, commands.counts  # batches of up to 256, never one per event
    assert set(commands.counts) <= {("insert", f"{COLLECTION}_20260310")}, commands.counts
