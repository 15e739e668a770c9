"""Claims with a lease on the real MongoDB-wire store (FerretDB or MongoDB): the protocol,
for the worker that wrote a job's documents (its memo) and for one that only reads them;
the time buckets; and the races between a claim's calls."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import ConnectionFailure, DuplicateKeyError

import processors.claims
from processors.claims import FAILED, RETRYING, Claim, ClaimOutcome, Claims
from processors.errors import TransientError
from processors.store import Document
from tests.processors import stored

pytestmark = pytest.mark.integration

MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LEASE_S = 60.0
DAY = timedelta(days=1)


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
async def claims(collection: AsyncCollection[Document]) -> AsyncIterator[Claims]:
    built = Claims(collection, working="working", done="done")
    yield built
    await built.aclose()


@pytest.fixture
async def other(collection: AsyncCollection[Document]) -> AsyncIterator[Claims]:
    """Another worker on the same store: it knows only what it reads."""
    built = Claims(collection, working="working", done="done")
    yield built
    await built.aclose()


@pytest.fixture(params=["same", "other"], ids=["same-worker", "other-worker"])
def next_worker(request: pytest.FixtureRequest, claims: Claims, other: Claims) -> Claims:
    """Who comes next: the worker that wrote the job's documents, or another one."""
    return claims if request.param == "same" else other


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
    fixed: Document = stored.utc(document)
    return fixed


async def bucket_ids(claims: Claims) -> dict[str, list[str]]:
    """The `_id`s in each bucket there is."""
    return {
        claims.buckets.name(period): sorted(
            d["_id"] for d in await claims.buckets.collection(period).find().to_list()
        )
        for period in await claims.buckets.existing()
    }


async def test_the_first_claim_inserts_its_document_into_two_buckets(claims: Claims) -> None:
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
        "history": [],
    }
    assert (claimed.outcome, claimed.attempt, claimed.document) == (ClaimOutcome.CLAIMED, 1, expected)
    assert utc(await claims.get("job-1")) == expected
    assert await bucket_ids(claims) == {"jobs_20251231": ["job-1"], "jobs_20260101": ["job-1"]}
    assert claims.loads == 0


async def test_of_many_concurrent_claims_exactly_one_wins(claims: Claims) -> None:
    outcomes = await asyncio.gather(*(claim(claims) for _ in range(20)), return_exceptions=True)
    won = [o for o in outcomes if isinstance(o, Claim)]
    held = [o for o in outcomes if isinstance(o, TransientError)]
    assert [(c.outcome, c.attempt) for c in won] == [(ClaimOutcome.CLAIMED, 1)]
    assert len(held) == 19
    assert {e.error_class for e in held} == {"ClaimHeld"}
    assert all(0 < (e.retry_after_ms or 0) <= LEASE_S * 1000 for e in held)


async def test_of_two_workers_racing_exactly_one_wins(claims: Claims, other: Claims) -> None:
    outcomes = await asyncio.gather(
        *(claim(worker) for worker in [claims, other] * 5), return_exceptions=True
    )
    assert [(o.outcome, o.attempt) for o in outcomes if isinstance(o, Claim)] == [(ClaimOutcome.CLAIMED, 1)]
    assert {o.error_class for o in outcomes if isinstance(o, TransientError)} == {"ClaimHeld"}


async def test_a_live_lease_is_held_with_the_time_left_on_it(claims: Claims, next_worker: Claims) -> None:
    await claim(claims)
    with pytest.raises(TransientError) as caught:
        await claim(next_worker, after_s=20)
    assert (caught.value.error_class, caught.value.retry_after_ms) == ("ClaimHeld", 40_000)
    assert caught.value.message == "another worker is working this job"


async def test_a_lease_is_held_up_to_its_last_moment(claims: Claims, next_worker: Claims) -> None:
    await claim(claims)
    with pytest.raises(TransientError) as caught:
        await claim(next_worker, after_s=LEASE_S)
    assert (caught.value.error_class, caught.value.retry_after_ms) == ("ClaimHeld", 1)


async def test_an_expired_lease_is_taken_over_and_the_attempt_counted(
    claims: Claims, next_worker: Claims
) -> None:
    await claim(claims)
    taken = await claim(next_worker, after_s=LEASE_S + 1, request="second")
    assert (taken.outcome, taken.attempt) == (ClaimOutcome.CLAIMED, 2)
    later = NOW + timedelta(seconds=LEASE_S + 1)
    stored = utc(await claims.get("job-1"))
    assert stored == utc(taken.document)
    # The latest fields win; what the first claim inserted stays.
    assert (stored["request"], stored["owner"], stored["created_at"]) == ("second", "u-1", NOW)
    assert (stored["lease_until"], stored["updated_at"]) == (later + timedelta(seconds=LEASE_S), later)
    # And the first holder can no longer claim it back.
    with pytest.raises(TransientError, match="another worker"):
        await claim(claims, after_s=LEASE_S + 2)


@pytest.mark.parametrize("released", [RETRYING, FAILED])
async def test_a_released_job_is_claimed_at_once(claims: Claims, next_worker: Claims, released: str) -> None:
    first = await claim(claims)
    await claims.release(
        "job-1", status=released, now=NOW, attempt=first.attempt, data={"error": "Boom"}, note={"e": "Boom"}
    )
    document = utc(await claims.get("job-1"))
    assert (document["status"], document["error"]) == (released, "Boom")
    assert "lease_until" not in document
    assert document["history"] == [{"attempt": 1, "at": NOW, "outcome": released, "e": "Boom"}]
    taken = await claim(next_worker, after_s=1)
    assert (taken.outcome, taken.attempt, taken.document["status"]) == (ClaimOutcome.CLAIMED, 2, "working")
    assert "error" not in taken.document


async def test_a_retry_by_the_worker_that_released_the_job_reads_nothing(claims: Claims) -> None:
    for attempt in (1, 2, 3):
        taken = await claim(claims, after_s=attempt)
        assert taken.attempt == attempt
        await claims.release("job-1", status=RETRYING, now=NOW + timedelta(seconds=attempt))
    assert claims.loads == 0
    assert [h["attempt"] for h in utc(await claims.get("job-1"))["history"]] == [1, 2, 3]


async def test_a_done_job_is_never_claimed_again(claims: Claims, next_worker: Claims) -> None:
    await claim(claims)
    assert await claims.finish("job-1", now=NOW + timedelta(seconds=1), data={"result": "r"})
    # A late failure report does not undo it, nor does a second completion.
    await claims.release("job-1", status=FAILED, now=NOW + timedelta(seconds=2), attempt=1)
    assert not await claims.finish("job-1", now=NOW + timedelta(seconds=3), data={"result": "other"})
    again = await claim(next_worker, after_s=86_000, request="second")
    assert (again.outcome, again.attempt) == (ClaimOutcome.ALREADY_DONE, 1)
    assert (again.document["result"], again.document["request"], again.document["status"]) == (
        "r",
        "first",
        "done",
    )
    assert utc(await claims.get("job-1")) == utc(again.document)


async def test_a_job_can_end_in_another_final_status(claims: Claims, next_worker: Claims) -> None:
    await claim(claims)
    finished = await claims.finish(
        "job-1",
        now=NOW + timedelta(seconds=1),
        data={"error": "refused"},
        note={"why": "Refusal"},
        status="gave-up",
    )
    assert finished
    assert not await claims.finish("job-1", now=NOW + timedelta(seconds=2), data={"result": "r"})
    again = await claim(next_worker, after_s=10)
    assert (again.outcome, again.attempt) == (ClaimOutcome.ALREADY_DONE, 1)
    assert (again.document["status"], again.document["error"]) == ("gave-up", "refused")
    assert [(h["outcome"], h["why"]) for h in again.document["history"]] == [("gave-up", "Refusal")]
    assert "result" not in again.document


@pytest.mark.parametrize("status", ["working", RETRYING])
async def test_a_job_cannot_finish_in_a_status_that_is_not_final(claims: Claims, status: str) -> None:
    await claim(claims)
    with pytest.raises(ValueError, match="not a final status"):
        await claims.finish("job-1", now=NOW, status=status)


async def test_a_late_completion_beats_a_takeover_seen_in_an_old_read(claims: Claims, other: Claims) -> None:
    await claim(claims)
    with pytest.raises(TransientError, match="another worker"):
        await claim(other, after_s=1)  # `other` read the lease
    await claims.finish("job-1", now=NOW + timedelta(seconds=LEASE_S + 5))  # after the lease ran out
    again = await claim(other, after_s=LEASE_S + 10)
    assert (again.outcome, again.attempt) == (ClaimOutcome.ALREADY_DONE, 1)


async def test_a_job_is_recognised_across_a_day_boundary(claims: Claims, next_worker: Claims) -> None:
    last_second = datetime(2026, 1, 1, 23, 59, 59, tzinfo=UTC)
    await claims.claim("job-1", now=last_second, lease_s=LEASE_S)
    with pytest.raises(TransientError, match="another worker"):
        await next_worker.claim("job-1", now=last_second + timedelta(seconds=2), lease_s=LEASE_S)
    await claims.finish("job-1", now=last_second + timedelta(seconds=3))
    a_day_later = await next_worker.claim("job-1", now=last_second + DAY, lease_s=LEASE_S)
    assert a_day_later.outcome is ClaimOutcome.ALREADY_DONE


async def test_a_retry_keeps_the_job_recognised_for_a_day_after_it(claims: Claims, other: Claims) -> None:
    first = await claim(claims)
    await claims.release("job-1", status=RETRYING, now=NOW, attempt=first.attempt)
    retried = await claims.claim("job-1", now=NOW + DAY, lease_s=LEASE_S)
    assert retried.attempt == 2
    await claims.finish("job-1", now=NOW + DAY)
    # The first claim's buckets are out of the window by now; the retry's are not.
    again = await other.claim("job-1", now=NOW + 2 * DAY - timedelta(seconds=1), lease_s=LEASE_S)
    assert (again.outcome, again.attempt) == (ClaimOutcome.ALREADY_DONE, 2)


async def test_past_the_window_a_job_is_new_again(claims: Claims, other: Claims) -> None:
    await claim(claims)
    await claims.finish("job-1", now=NOW)
    later = await other.claim("job-1", now=NOW + 2 * DAY, lease_s=LEASE_S)
    assert (later.outcome, later.attempt) == (ClaimOutcome.CLAIMED, 1)


async def test_buckets_older_than_two_periods_are_dropped_when_a_period_begins(
    collection: AsyncCollection[Document],
) -> None:
    claims = Claims(collection, working="working", done="done")
    for day in range(4):
        await claims.claim(f"job-{day}", now=NOW + day * DAY, lease_s=LEASE_S)
    assert sorted(await bucket_ids(claims)) == ["jobs_20260102", "jobs_20260103", "jobs_20260104"]
    assert await claims.get("job-0") is None
    assert await claims.prepare(NOW + 5 * DAY) == ["jobs_20260102", "jobs_20260103"]
    await claims.aclose()


async def test_a_clock_far_ahead_drops_no_bucket_still_in_use(collection: AsyncCollection[Document]) -> None:
    claims = Claims(collection, working="working", done="done")
    today = datetime.now(UTC)
    await claims.claim("job-1", now=today, lease_s=LEASE_S)
    assert await claims.prepare(today + 30 * DAY) == []
    assert await claims.get("job-1") is not None
    await claims.aclose()


async def test_every_entry_and_every_document_can_be_listed(claims: Claims) -> None:
    await claim(claims, "job-a")
    await claim(claims, "job-b")
    await claims.finish("job-b", now=NOW)
    assert [(e["job_id"], e["status"]) for e in await claims.entries()] == [
        ("job-a", "working"),
        ("job-b", "done"),
    ]
    assert sorted(d["_id"] for d in await claims.documents()) == [
        "job-a",
        "job-a",
        "job-b",
        "job-b",
        "job-b!",
    ]


# ---------------------------------------------------------------------- failures and races


async def test_an_unreachable_store_is_transient_and_the_retry_takes_the_next_attempt_at_once(
    claims: Claims, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = processors.claims.insert_each
    calls = 0

    async def fails_after_the_first_bucket(collection: Any, docs: list[Document]) -> list[Exception | None]:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first bucket took the claim, the second is unreachable
            raise ConnectionFailure("refused")
        return await real(collection, docs)

    monkeypatch.setattr(processors.claims, "insert_each", fails_after_the_first_bucket)
    with pytest.raises(TransientError) as caught:
        await claim(claims)
    assert caught.value.error_class == "StoreUnavailable"
    # Attempt 1 is half stored, with a live lease; this worker knows it will not use it.
    retried = await claim(claims, after_s=1)
    assert (retried.outcome, retried.attempt) == (ClaimOutcome.CLAIMED, 2)


async def test_losing_the_next_attempt_twice_in_a_row_is_a_race_to_retry_soon(
    claims: Claims, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await claim(claims)
    await claims.release("job-1", status=RETRYING, now=NOW, attempt=first.attempt)

    async def always_taken(period: int, doc: Document) -> None:
        raise DuplicateKeyError("E11000 duplicate key")

    monkeypatch.setattr(claims, "_insert_pair", always_taken)
    with pytest.raises(TransientError) as caught:
        await claim(claims, after_s=1)
    assert (caught.value.error_class, caught.value.retry_after_ms) == ("ClaimRace", 100)


async def test_a_collision_with_nothing_readable_is_a_race(
    claims: Claims, collection: AsyncCollection[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another worker's clock is a period ahead: its claim is in today's bucket and tomorrow's.
    ahead = Claims(collection, working="working", done="done")
    await ahead.claim("job-1", now=NOW + DAY + timedelta(seconds=1), lease_s=LEASE_S)
    with pytest.raises(TransientError, match="another worker"):
        await claim(claims)  # it collides in today's bucket and reads the claim there
    await ahead.aclose()

    async def nothing(job_id: str, period: int) -> Any:
        return processors.claims._Known()

    monkeypatch.setattr(claims, "_load", nothing)
    with pytest.raises(TransientError) as caught:
        await claim(claims, "job-1")
    assert (caught.value.error_class, caught.value.retry_after_ms) == ("ClaimRace", 100)


@pytest.mark.parametrize("field", ["_id", "status", "attempts", "lease_until", "history"])
async def test_fields_cannot_overwrite_the_claims_own(claims: Claims, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        await claims.claim("job-1", now=NOW, lease_s=LEASE_S, fields={field: "x"})
    with pytest.raises(ValueError, match=field):
        await claims.claim("job-1", now=NOW, lease_s=LEASE_S, on_insert={field: "x"})


@pytest.mark.parametrize("job_id", ["a#1", "a!"])
async def test_job_ids_cannot_look_like_the_claims_own_ids(claims: Claims, job_id: str) -> None:
    with pytest.raises(ValueError, match="must not contain"):
        await claims.claim(job_id, now=NOW, lease_s=LEASE_S)


@pytest.mark.parametrize(("working", "done"), [("done", "done"), ("working", RETRYING), (FAILED, "done")])
def test_the_statuses_must_differ(collection: AsyncCollection[Document], working: str, done: str) -> None:
    with pytest.raises(ValueError, match="statuses"):
        Claims(collection, working=working, done=done)


async def test_releasing_a_job_never_claimed_changes_nothing(claims: Claims) -> None:
    await claims.release("job-9", status=RETRYING, now=NOW)
    assert await claims.get("job-9") is None
    assert await claims.document("job-9", now=NOW) is None
