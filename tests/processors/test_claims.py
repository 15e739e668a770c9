"""Claims with a lease on the real MongoDB-wire store (FerretDB or MongoDB), and the races
between a claim's calls on a stub collection."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from processors.claims import FAILED, RETRYING, Claim, ClaimOutcome, Claims
from processors.errors import TransientError
from processors.store import Document, aware

pytestmark = pytest.mark.integration

MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LEASE_S = 60.0


@pytest.fixture(params=[True, False], ids=["tz_aware", "naive"])
async def collection(request: pytest.FixtureRequest) -> AsyncIterator[AsyncCollection[Document]]:
    # Both kinds of client: a naive one returns stored datetimes without a time zone.
    client: AsyncMongoClient[Document] = AsyncMongoClient(MONGODB_URL, tz_aware=request.param)
    name = f"test_claims_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]["jobs"]
    finally:
        await client.drop_database(name)
        await client.close()


@pytest.fixture
def claims(collection: AsyncCollection[Document]) -> Claims:
    return Claims(collection, working="working", done="done")


async def claim(claims: Claims, job_id: str = "job-1", after_s: float = 0, **fields: Any) -> Claim:
    return await claims.claim(
        job_id,
        now=NOW + timedelta(seconds=after_s),
        lease_s=LEASE_S,
        fields=fields or {"request": "first"},
        on_insert={"owner": "u-1"},
    )


def utc(document: Document | None) -> Document:
    assert document is not None
    return {key: aware(value) if isinstance(value, datetime) else value for key, value in document.items()}


async def test_the_first_claim_inserts_the_document(
    claims: Claims, collection: AsyncCollection[Document]
) -> None:
    claimed = await claim(claims)
    expected = {
        "_id": "job-1",
        "job_id": "job-1",
        "owner": "u-1",
        "request": "first",
        "status": "working",
        "attempts": 1,
        "lease_until": NOW + timedelta(seconds=LEASE_S),
        "created_at": NOW,
        "updated_at": NOW,
    }
    assert (claimed.outcome, claimed.attempt, claimed.document) == (ClaimOutcome.CLAIMED, 1, expected)
    assert utc(await collection.find_one({"_id": "job-1"})) == expected


async def test_of_many_concurrent_claims_exactly_one_wins(claims: Claims) -> None:
    outcomes = await asyncio.gather(*(claim(claims) for _ in range(20)), return_exceptions=True)
    won = [o for o in outcomes if isinstance(o, Claim)]
    held = [o for o in outcomes if isinstance(o, TransientError)]
    assert [(c.outcome, c.attempt) for c in won] == [(ClaimOutcome.CLAIMED, 1)]
    assert len(held) == 19
    assert {e.error_class for e in held} == {"ClaimHeld"}


async def test_a_live_lease_is_held_with_the_time_left_on_it(claims: Claims) -> None:
    await claim(claims)
    with pytest.raises(TransientError) as caught:
        await claim(claims, after_s=20)
    assert (caught.value.error_class, caught.value.retry_after_ms) == ("ClaimHeld", 40_000)
    assert caught.value.message == "another worker is working this job"


async def test_a_lease_is_held_up_to_its_last_moment(claims: Claims) -> None:
    await claim(claims)
    with pytest.raises(TransientError) as caught:
        await claim(claims, after_s=LEASE_S)
    assert (caught.value.error_class, caught.value.retry_after_ms) == ("ClaimHeld", 1)


async def test_an_expired_lease_is_taken_over_and_the_attempt_counted(
    claims: Claims, collection: AsyncCollection[Document]
) -> None:
    await claim(claims)
    taken = await claim(claims, after_s=LEASE_S + 1, request="second")
    assert (taken.outcome, taken.attempt) == (ClaimOutcome.CLAIMED, 2)
    later = NOW + timedelta(seconds=LEASE_S + 1)
    stored = utc(await collection.find_one({"_id": "job-1"}))
    assert stored == utc(taken.document)
    # The latest fields win; what the first claim inserted stays.
    assert (stored["request"], stored["owner"], stored["created_at"]) == ("second", "u-1", NOW)
    assert (stored["lease_until"], stored["updated_at"]) == (later + timedelta(seconds=LEASE_S), later)


@pytest.mark.parametrize("released", [RETRYING, FAILED])
async def test_a_released_job_is_claimed_at_once(
    claims: Claims, collection: AsyncCollection[Document], released: str
) -> None:
    await claim(claims)
    await collection.update_one(
        {"_id": "job-1"}, {"$set": {"status": released}, "$unset": {"lease_until": ""}}
    )
    taken = await claim(claims, after_s=1)
    assert (taken.outcome, taken.attempt, taken.document["status"]) == (ClaimOutcome.CLAIMED, 2, "working")


async def test_a_done_job_is_never_claimed_again(
    claims: Claims, collection: AsyncCollection[Document]
) -> None:
    await claim(claims)
    await collection.update_one(
        {"_id": "job-1"}, {"$set": {"status": "done", "result": "r"}, "$unset": {"lease_until": ""}}
    )
    again = await claim(claims, after_s=86_400, request="second")
    assert (again.outcome, again.attempt) == (ClaimOutcome.ALREADY_DONE, 1)
    assert (again.document["result"], again.document["request"]) == ("r", "first")
    assert utc(await collection.find_one({"_id": "job-1"})) == utc(again.document)


class _StubCollection:
    """A collection whose job exists for `insert_one` but is not claimable; then `current`."""

    name = "jobs"

    def __init__(self, current: Document | None) -> None:
        self.current = current

    async def insert_one(self, document: Document) -> None:
        raise DuplicateKeyError("E11000 duplicate key")

    async def find_one_and_update(self, *args: object, **kwargs: object) -> None:
        return None

    async def find_one(self, *args: object, **kwargs: object) -> Document | None:
        return self.current


def stub_claims(current: Document | None) -> Claims:
    return Claims(cast("AsyncCollection[Document]", _StubCollection(current)), working="working", done="done")


@pytest.mark.parametrize(
    "current",
    [
        None,  # deleted
        {"_id": "job-1", "status": RETRYING, "attempts": 1},  # released by its holder
        {"_id": "job-1", "status": "working", "attempts": 1},  # no lease
    ],
    ids=["vanished", "released", "no-lease"],
)
async def test_a_document_that_changes_during_the_claim_is_a_race_to_retry_soon(
    current: Document | None,
) -> None:
    with pytest.raises(TransientError) as caught:
        await claim(stub_claims(current))
    assert (caught.value.error_class, caught.value.retry_after_ms) == ("ClaimRace", 100)


async def test_an_unreachable_store_is_transient() -> None:
    class Unreachable(_StubCollection):
        async def insert_one(self, document: Document) -> None:
            raise ConnectionFailure("refused")

    claims = Claims(cast("AsyncCollection[Document]", Unreachable(None)), working="working", done="done")
    with pytest.raises(TransientError) as caught:
        await claim(claims)
    assert caught.value.error_class == "StoreUnavailable"


@pytest.mark.parametrize("field", ["_id", "status", "attempts", "lease_until"])
async def test_fields_cannot_overwrite_the_claims_own(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        await stub_claims(None).claim("job-1", now=NOW, lease_s=LEASE_S, fields={field: "x"})
    with pytest.raises(ValueError, match=field):
        await stub_claims(None).claim("job-1", now=NOW, lease_s=LEASE_S, on_insert={field: "x"})


@pytest.mark.parametrize(("working", "done"), [("done", "done"), ("working", RETRYING), (FAILED, "done")])
def test_the_statuses_must_differ(working: str, done: str) -> None:
    with pytest.raises(ValueError, match="statuses"):
        Claims(cast("AsyncCollection[Document]", _StubCollection(None)), working=working, done=done)
