"""The `ads` collection on a real MongoDB-wire server (FerretDB or MongoDB)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from processors.ads.generator import GeneratedCopy, TokenUsage
from processors.ads.jobs import AdVariant
from processors.ads.store import AdStore, Status
from processors.claims import ClaimOutcome
from processors.errors import TransientError
from processors.store import aware
from tests.processors.ads.conftest import make_job
from tests.processors.stored import utc

pytestmark = pytest.mark.integration

NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
LEASE_S = 60.0


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


async def test_first_claim_inserts_the_request(store: AdStore) -> None:
    job = make_job(notify={"email": "ada@example.com", "live": True})
    claim = await store.claim(job, now=NOW, lease_s=LEASE_S)
    assert (claim.outcome, claim.attempt) == (ClaimOutcome.CLAIMED, 1)
    document = await store.get(job.job_id)
    assert document is not None
    assert document["status"] == Status.PROCESSING.value
    assert document["user_id"] == job.user_id
    assert document["request"] == job.model_dump(mode="json")
    assert aware(document["lease_until"]) == NOW + timedelta(seconds=LEASE_S)


async def test_a_live_lease_is_held_against_other_workers(store: AdStore) -> None:
    job = make_job()
    await store.claim(job, now=NOW, lease_s=LEASE_S)
    with pytest.raises(TransientError) as caught:
        await store.claim(job, now=NOW + timedelta(seconds=20), lease_s=LEASE_S)
    assert caught.value.error_class == "ClaimHeld"
    assert caught.value.retry_after_ms == 40_000


async def test_an_expired_lease_can_be_claimed_again(store: AdStore) -> None:
    job = make_job()
    await store.claim(job, now=NOW, lease_s=LEASE_S)
    claim = await store.claim(job, now=NOW + timedelta(seconds=61), lease_s=LEASE_S)
    assert (claim.outcome, claim.attempt) == (ClaimOutcome.CLAIMED, 2)


@pytest.mark.parametrize("release", ["mark_failed", "mark_retrying"])
async def test_failed_and_retrying_jobs_can_be_claimed_at_once(store: AdStore, release: str) -> None:
    job = make_job()
    await store.claim(job, now=NOW, lease_s=LEASE_S)
    await getattr(store, release)(job.job_id, "OpenAI answered 500", "ServerError")
    document = await store.get(job.job_id)
    assert document is not None
    assert document["error_class"] == "ServerError"
    assert "lease_until" not in document
    claim = await store.claim(job, now=NOW + timedelta(seconds=1), lease_s=LEASE_S)
    assert (claim.outcome, claim.attempt) == (ClaimOutcome.CLAIMED, 2)


async def test_succeeded_is_stored_and_never_claimed_again(store: AdStore) -> None:
    job = make_job()
    await store.claim(job, now=NOW, lease_s=LEASE_S)
    document = await store.mark_succeeded(job.job_id, generated(), now=NOW + timedelta(seconds=2))
    assert document["status"] == Status.SUCCEEDED.value
    assert document["variants"] == [
        {"headline": "Glare-free light", "body": "No flicker. Folds flat.", "call_to_action": None}
    ]
    assert document["token_usage"] == {"input_tokens": 100, "output_tokens": 40, "total_tokens": 140}
    assert (document["model"], document["model_calls"], document["generation_ms"], document["attempts"]) == (
        "gpt-fake",
        1,
        850,
        1,
    )
    assert aware(document["completed_at"]) == NOW + timedelta(seconds=2)
    # Even long after, and after a late failure report, it stays succeeded.
    await store.mark_failed(job.job_id, "late", "Late")
    claim = await store.claim(job, now=NOW + timedelta(days=1), lease_s=LEASE_S)
    assert claim.outcome is ClaimOutcome.ALREADY_DONE
    assert claim.document["variants"] == document["variants"]


async def test_a_second_success_keeps_the_first_copy(store: AdStore) -> None:
    job = make_job()
    await store.claim(job, now=NOW, lease_s=LEASE_S)
    first = await store.mark_succeeded(job.job_id, generated())
    other = GeneratedCopy(**(generated().__dict__ | {"model": "another-model"}))
    second = await store.mark_succeeded(job.job_id, other)
    assert second["model"] == first["model"] == "gpt-fake"


async def test_succeeded_copies_are_kept_in_ads_and_claims_in_daily_buckets(
    store: AdStore, database: AsyncDatabase[dict[str, Any]]
) -> None:
    done, failed = make_job(), make_job()
    for job in (done, failed):
        await store.claim(job, now=NOW, lease_s=LEASE_S)
    stored = await store.mark_succeeded(done.job_id, generated(), now=NOW + timedelta(seconds=1))
    await store.mark_failed(failed.job_id, "refused", "Refusal", now=NOW + timedelta(seconds=1))
    assert utc(await database["ads"].find().to_list()) == [utc(stored)]
    assert "ads_claims_20250131" in await database.list_collection_names()
    document = await store.get(failed.job_id)
    assert document is not None
    assert (document["status"], document["error"], document["error_class"]) == (
        "failed",
        "refused",
        "Refusal",
    )


async def test_another_worker_answers_a_succeeded_job_from_the_store(
    store: AdStore, database: AsyncDatabase[dict[str, Any]]
) -> None:
    job = make_job()
    await store.claim(job, now=NOW, lease_s=LEASE_S)
    stored = await store.mark_succeeded(job.job_id, generated(), now=NOW + timedelta(seconds=1))
    other = AdStore(database["ads"])
    claim = await other.claim(job, now=NOW + timedelta(hours=20), lease_s=LEASE_S)
    assert claim.outcome is ClaimOutcome.ALREADY_DONE
    assert claim.document["variants"] == stored["variants"]


async def test_past_the_claims_window_a_job_is_generated_again_but_the_first_copy_stays(
    store: AdStore, database: AsyncDatabase[dict[str, Any]]
) -> None:
    job = make_job()
    await store.claim(job, now=NOW, lease_s=LEASE_S)
    first = await store.mark_succeeded(job.job_id, generated(), now=NOW + timedelta(seconds=1))
    other = AdStore(database["ads"])
    later = NOW + timedelta(days=2)
    claim = await other.claim(job, now=later, lease_s=LEASE_S)
    assert claim.outcome is ClaimOutcome.CLAIMED
    again = GeneratedCopy(**(generated().__dict__ | {"model": "another-model"}))
    assert utc(await other.mark_succeeded(job.job_id, again, now=later)) == utc(first)
    assert (await other.claim(job, now=later, lease_s=LEASE_S)).document["model"] == "gpt-fake"


class _FailingCollection:
    """A collection, and its database's, whose every read fails with `error`."""

    def __init__(self, error: Exception, name: str = "ads") -> None:
        self.error = error
        self.name = name

    @property
    def database(self) -> _FailingCollection:
        return self

    def __getitem__(self, name: str) -> _FailingCollection:
        return _FailingCollection(self.error, name)

    async def find_one(self, *args: object, **kwargs: object) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        ConnectionFailure("refused"),
        ServerSelectionTimeoutError("no servers"),
        NetworkTimeout("timed out"),
        AutoReconnect("primary stepped down"),
        ExecutionTimeout("operation exceeded time limit", code=50),
    ],
)
async def test_an_unreachable_store_is_transient(error: Exception) -> None:
    # A stub, not a dead port: PyMongo 4.20's async client sometimes leaks the socket of a
    # failed connection, and the ResourceWarning would fail an unrelated test.
    store = AdStore(cast("AsyncCollection[dict[str, Any]]", _FailingCollection(error)))
    with pytest.raises(TransientError) as caught:
        await store.get("job-1")
    assert caught.value.error_class == "StoreUnavailable"
    assert caught.value.__cause__ is error


async def test_other_store_errors_are_not_hidden() -> None:
    error = OperationFailure("unsupported", code=115)
    store = AdStore(cast("AsyncCollection[dict[str, Any]]", _FailingCollection(error)))
    with pytest.raises(OperationFailure):
        await store.get("job-1")
