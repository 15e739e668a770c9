"""The `ads` collection on a real MongoDB-wire server (FerretDB or MongoDB)."""

from __future__ import annotations

import time
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


async def test_a_retrying_job_can_be_claimed_at_once(store: AdStore) -> None:
    job = make_job()
    await store.claim(job, now=NOW, lease_s=LEASE_S)
    await store.mark_retrying(job.job_id, "OpenAI answered 500", "ServerError")
    document = await store.get(job.job_id)
    assert document is not None
    assert (document["status"], document["error_class"]) == ("retrying", "ServerError")
    assert "lease_until" not in document
    claim = await store.claim(job, now=NOW + timedelta(seconds=1), lease_s=LEASE_S)
    assert (claim.outcome, claim.attempt) == (ClaimOutcome.CLAIMED, 2)


@pytest.mark.parametrize("status", [Status.FAILED, Status.DEAD_LETTERED])
async def test_a_failed_job_is_final_and_only_a_replay_claims_it(store: AdStore, status: Status) -> None:
    job = make_job()
    await store.claim(job, now=NOW, lease_s=LEASE_S)
    stored = await store.mark_failed(
        job.job_id, "the model refused the request", "Refusal", status=status, now=NOW + timedelta(seconds=1)
    )
    assert (stored["status"], stored["error_class"], stored["reason"]) == (
        status.value,
        "Refusal",
        "permanent",
    )
    assert "lease_until" not in stored
    assert [run["status"] for run in stored["runs"]] == [status.value]
    claim = await store.claim(job, now=NOW + timedelta(seconds=2), lease_s=LEASE_S)
    assert claim.outcome is ClaimOutcome.ALREADY_DONE
    assert (claim.document["status"], claim.document["error_class"]) == (status.value, "Refusal")
    replayed = await store.claim(
        job, now=NOW + timedelta(seconds=3), lease_s=LEASE_S, replay="ad-jobs.dlq:0:4"
    )
    assert (replayed.outcome, replayed.attempt) == (ClaimOutcome.CLAIMED, 1)


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


async def test_finished_jobs_are_kept_in_ads_and_claims_in_daily_buckets(
    store: AdStore, database: AsyncDatabase[dict[str, Any]]
) -> None:
    done, failed, working = make_job(), make_job(), make_job()
    for job in (done, failed, working):
        await store.claim(job, now=NOW, lease_s=LEASE_S)
    stored = await store.mark_succeeded(done.job_id, generated(), now=NOW + timedelta(seconds=1))
    stored_failure = await store.mark_failed(
        failed.job_id, "refused", "Refusal", now=NOW + timedelta(seconds=1)
    )
    assert sorted(utc(await database["ads"].find().to_list()), key=lambda d: d["_id"]) == sorted(
        [utc(stored), utc(stored_failure)], key=lambda d: d["_id"]
    )
    assert "ads_claims_20250131" in await database.list_collection_names()
    document = await store.get(failed.job_id)
    assert document is not None
    assert (document["status"], document["error"], document["error_class"]) == (
        "failed",
        "refused",
        "Refusal",
    )
    in_progress = await store.get(working.job_id)
    assert in_progress is not None
    assert in_progress["status"] == "processing"


async def test_tokens_of_every_attempt_add_up_in_the_job_and_its_run(store: AdStore) -> None:
    job = make_job()
    await store.claim(job, now=NOW, lease_s=LEASE_S)
    spent_before = TokenUsage(input_tokens=120, output_tokens=30, total_tokens=150)
    await store.mark_retrying(
        job.job_id,
        "OpenAI did not answer in time",
        "Timeout",
        stage="model",
        token_usage=spent_before,
        model_calls=1,
    )
    await store.claim(job, now=NOW + timedelta(seconds=1), lease_s=LEASE_S)
    document = await store.mark_succeeded(job.job_id, generated(), now=NOW + timedelta(seconds=2))
    total = {"input_tokens": 220, "output_tokens": 70, "total_tokens": 290}
    assert (document["token_usage"], document["model_calls"], document["attempts"]) == (total, 2, 2)
    [run] = document["runs"]
    assert run == {
        "run": 1,
        "replayed_from": None,
        "status": "succeeded",
        "error_class": None,
        "model_calls": 2,
        "token_usage": total,
        "attempts": 2,
        "completed_at": run["completed_at"],
    }
    assert aware(run["completed_at"]) == NOW + timedelta(seconds=2)


async def test_a_replay_run_is_added_to_the_jobs_history(
    store: AdStore, database: AsyncDatabase[dict[str, Any]]
) -> None:
    job = make_job()
    await store.claim(job, now=NOW, lease_s=LEASE_S)
    failed = TokenUsage(input_tokens=300, output_tokens=90, total_tokens=390)
    await store.mark_failed(
        job.job_id,
        "still over the limits",
        "OutOfBounds",
        model="gpt-fake",
        token_usage=failed,
        model_calls=2,
        now=NOW,
    )
    replay = "ad-jobs.dlq:0:7"
    later = NOW + timedelta(hours=1)
    claim = await store.claim(job, now=later, lease_s=LEASE_S, replay=replay)
    assert claim.outcome is ClaimOutcome.CLAIMED
    document = await store.mark_succeeded(job.job_id, generated(), replay=replay, now=later)
    assert document["_id"] == document["job_id"] == job.job_id
    assert (document["status"], document["model"], aware(document["completed_at"])) == (
        "succeeded",
        "gpt-fake",
        later,
    )
    assert document["variants"] == [v.model_dump(mode="json") for v in generated().variants]
    assert not {"error", "error_class", "reason"} & document.keys()
    assert document["token_usage"] == {"input_tokens": 400, "output_tokens": 130, "total_tokens": 530}
    assert document["model_calls"] == 3
    assert [
        (r["run"], r["replayed_from"], r["status"], r["error_class"], r["model_calls"])
        for r in document["runs"]
    ] == [
        (1, None, "failed", "OutOfBounds", 2),
        (2, replay, "succeeded", None, 1),
    ]
    # Recorded once: the same run again changes nothing, and the replay is answered.
    assert utc(await store.mark_succeeded(job.job_id, generated(), replay=replay, now=later)) == utc(document)
    other = AdStore(database["ads"])
    again = await other.claim(job, now=later, lease_s=LEASE_S, replay=replay)
    await other.aclose()
    assert again.outcome is ClaimOutcome.ALREADY_DONE


async def test_a_run_recorded_in_ads_but_not_in_the_claims_is_answered_by_the_next_attempt(
    store: AdStore, database: AsyncDatabase[dict[str, Any]]
) -> None:
    # A worker stored the record and died before the claims learned it: the next attempt
    # (once the lease ran out) finds the record and makes no model call.
    job = make_job()
    await store.claim(job, now=NOW, lease_s=LEASE_S)
    other = AdStore(database["ads"])
    recorded = await other.mark_succeeded(job.job_id, generated(), now=NOW + timedelta(seconds=1))
    await database["ads_claims_20250131"].delete_many({"_id": f"{job.job_id}!"})
    await database["ads_claims_20250130"].delete_many({"_id": f"{job.job_id}!"})
    fresh = AdStore(database["ads"])
    claim = await fresh.claim(job, now=NOW + timedelta(seconds=LEASE_S + 1), lease_s=LEASE_S)
    assert (claim.outcome, claim.attempt) == (ClaimOutcome.ALREADY_DONE, 2)
    assert claim.document["variants"] == recorded["variants"]
    await other.aclose()
    await fresh.aclose()


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


REPLAY_SIZE_DOCS = 3_000
REPLAY_DEADLINE_S = 5.0


async def test_a_replay_run_is_recorded_quickly_among_thousands_of_documents(
    store: AdStore, database: AsyncDatabase[dict[str, Any]]
) -> None:
    # FerretDB v1 scans `ads` for the read and the update a replay run makes: measure them
    # at the size `ads` reaches (a few days of jobs).
    request = make_job().model_dump(mode="json")
    filler = [
        {
            "_id": f"ad-old-{n}",
            "job_id": f"ad-old-{n}",
            "user_id": "user-1",
            "request": request,
            "status": "succeeded",
            "variants": [v.model_dump(mode="json") for v in generated().variants],
            "token_usage": dict(generated().token_usage),
            "model_calls": 1,
            "completed_at": NOW,
            "runs": [{"run": 1, "replayed_from": None, "status": "succeeded"}],
        }
        for n in range(REPLAY_SIZE_DOCS)
    ]
    for start in range(0, len(filler), 500):
        await database["ads"].insert_many(filler[start : start + 500])
    job = make_job()
    await store.claim(job, now=NOW, lease_s=LEASE_S)
    await store.mark_failed(job.job_id, "refused", "Refusal", now=NOW)
    replay = "ad-jobs.dlq:3:99"
    await store.claim(job, now=NOW, lease_s=LEASE_S, replay=replay)
    started_s = time.monotonic()
    document = await store.mark_succeeded(job.job_id, generated(), replay=replay, now=NOW)
    elapsed_s = time.monotonic() - started_s
    assert [run["status"] for run in document["runs"]] == ["failed", "succeeded"]
    print(f"replay run recorded among {REPLAY_SIZE_DOCS} ads documents in {elapsed_s * 1000:.0f} ms")
    assert elapsed_s < REPLAY_DEADLINE_S
