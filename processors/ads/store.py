"""The ads store: the record of every finished job, and the claims that keep generation once.

It makes generation effectively-once under at-least-once delivery: a worker *claims* a
job before calling the model (`processors.claims`), a finished job is not generated
again, and a job another worker is generating right now (a live lease) is left alone.

A job ends in exactly one final status (`TERMINAL`): `succeeded`; `failed`, a verdict on
the job (a refusal, copy out of bounds after the repair round, no model configured, or
its attempts used up by the model's transient errors); or `dead-lettered`, sent to the
dead-letter topic for another reason (an unexpected error, say). A finished job is never
claimed again: only a replay (`python -m streams.cli dlq replay`) runs it again, as a
new *run* with a claims identity of its own (`run_id`).

Two parts:

- `ads`: one document per finished job (`_id` = job_id), kept until `purge` deletes it
  (`LEDGER_RETENTION_DAYS` after `completed_at`). Its top-level fields tell the latest
  run: the request, `status`, `variants` (succeeded) or `error`, `error_class` and
  `reason` (the dead letter's reason), `model`, `completed_at`, `attempts`, `history`
  (that run's attempts) and timings. `token_usage` (`input_tokens`, `output_tokens`,
  `total_tokens`) and `model_calls` add up every call the job paid for, in every
  attempt and run, answers that failed validation included. `runs` lists every run,
  oldest first: `run`, `replayed_from` (None for the first), `status`, `error_class`,
  `model_calls`, `token_usage`, `attempts`, `completed_at`.

  The first run's document is written with an insert (the hot path; the first copy
  stored stays). A replay run reads the document and updates it (`$set` the latest run,
  `$inc` the totals, `$push` the run), conditional on the number of runs it read: one
  scanning read and update on FerretDB, for a rare operator action.
- `ads_claims_<YYYYMMDD>`: the claims, releases and completions of the runs, in daily
  buckets dropped after two days (`processors.claims`). A redelivered job is answered
  from them without a model call for at least a day after its last claim. A release
  notes what the attempt spent (`token_usage`, `model_calls`), so that the run's total
  counts the attempts that failed after a paid call.

The `ads` document is written before the claims learn that the run is finished. A crash
in between leaves a lease that runs out; the next attempt (2 or more) reads `ads` first,
finds the run recorded and finishes the claims from it, with no model call.

`get(job_id)` reads `ads`, then the claims of the first run (`processing` or `retrying`).

Portable to FerretDB v1 and MongoDB: no transactions, TTL or partial indexes, and no
user-chosen keys in stored data (they could hold `.` or `$`).
"""

from __future__ import annotations

import enum
import functools
import hashlib
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from processors import claims
from processors.ads.generator import GeneratedCopy, TokenUsage
from processors.ads.jobs import AdJob
from processors.batching import Batcher
from processors.buckets import DAY_S
from processors.claims import BatchSettings, Claim, ClaimOutcome, Claims
from processors.errors import PermanentError, TransientError
from processors.store import Document, as_stored, guard_store, insert_each


class Status(enum.StrEnum):
    PROCESSING = "processing"
    RETRYING = claims.RETRYING
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD_LETTERED = "dead-lettered"


TERMINAL = frozenset({Status.SUCCEEDED.value, Status.FAILED.value, Status.DEAD_LETTERED.value})
"""The final statuses: a job in one is answered from the store, never run again but by a replay."""

REPLAY_MARK = "/replay/"
"""In a replay run's claims id, `<job_id>/replay/<hash of the mark>`: a job id never holds `/`."""

STAGE_MODEL = "model"
"""A release's `stage` when the model call failed (a transient provider error)."""

_SUCCEEDED_FIELDS = ("variants", "generation_ms")
_FAILED_FIELDS = ("error", "error_class", "reason")
# Kept from the first run when a replay updates the document.
_KEPT_ON_REPLAY = frozenset({"_id", "job_id", "user_id", "created_at", "token_usage", "model_calls", "runs"})
_REPLAY_TRIES = 3


def run_id(job_id: str, replay: str | None) -> str:
    """The claims id of one run of a job: the job id, or a replay's own id.

    `replay` is the replayed record's `x-replayed-from` mark, unique per dead letter.
    """
    if replay is None:
        return job_id
    return f"{job_id}{REPLAY_MARK}{hashlib.sha256(replay.encode()).hexdigest()[:16]}"


def no_usage() -> TokenUsage:
    return TokenUsage(input_tokens=0, output_tokens=0, total_tokens=0)


def add_usage(first: TokenUsage, second: TokenUsage) -> TokenUsage:
    return TokenUsage(
        input_tokens=first["input_tokens"] + second["input_tokens"],
        output_tokens=first["output_tokens"] + second["output_tokens"],
        total_tokens=first["total_tokens"] + second["total_tokens"],
    )


def _usage_of(value: Any) -> TokenUsage:
    if not isinstance(value, dict):
        return no_usage()
    return TokenUsage(
        input_tokens=int(value.get("input_tokens") or 0),
        output_tokens=int(value.get("output_tokens") or 0),
        total_tokens=int(value.get("total_tokens") or 0),
    )


def _spent_so_far(document: Document | None) -> tuple[TokenUsage, int]:
    """What the attempts of a run recorded in its history (the release notes) spent."""
    usage, calls = no_usage(), 0
    for entry in (document or {}).get("history") or []:
        usage = add_usage(usage, _usage_of(entry.get("token_usage")))
        calls += int(entry.get("model_calls") or 0)
    return usage, calls


def find_run(document: Document | None, replay: str | None) -> Document | None:
    """The entry of `runs` that the run marked `replay` (None: the first run) recorded."""
    if document is None:
        return None
    runs = document.get("runs")
    if runs is None:  # stored before runs were kept: its one run is the first
        return _legacy_run(document) if replay is None and document.get("status") in TERMINAL else None
    return next((run for run in runs if run.get("replayed_from") == replay), None)


def _legacy_run(document: Document) -> Document:
    return {
        "run": 1,
        "replayed_from": None,
        "status": document.get("status"),
        "error_class": document.get("error_class"),
        "model_calls": int(document.get("model_calls") or 0),
        "token_usage": _usage_of(document.get("token_usage")),
        "attempts": document.get("attempts"),
        "completed_at": document.get("completed_at"),
    }


class AdStore:
    """`collection` (`ads`) keeps the finished jobs; the claims go to `<its name>_claims_<day>`."""

    def __init__(
        self,
        collection: AsyncCollection[Document],
        *,
        bucket_s: int = DAY_S,
        memo_size: int = 2_000,
        batching: BatchSettings | None = None,
    ) -> None:
        self._collection = collection
        settings = batching or BatchSettings()
        self._claims = Claims(
            collection.database[f"{collection.name}_claims"],
            working=Status.PROCESSING.value,
            done=Status.SUCCEEDED.value,
            bucket_s=bucket_s,
            memo_size=memo_size,
            batching=settings,
        )
        self._results: Batcher[Document, None] = Batcher(
            lambda docs: insert_each(collection, docs),
            max_batch=settings.max_batch,
            max_delay_s=settings.insert_delay_s,
            max_in_flight=settings.inserts_in_flight,
        )

    @property
    def claims(self) -> Claims:
        return self._claims

    async def ensure_indexes(self, now: datetime | None = None) -> None:
        await guard_store(
            lambda: self._collection.create_index([("user_id", ASCENDING), ("created_at", DESCENDING)])
        )
        await self._claims.prepare(now or datetime.now(UTC))

    async def get(self, job_id: str) -> Document | None:
        """The record of a finished job (its latest run on top); else the first run's claims
        document; else None."""
        stored = await self.stored(job_id)
        if stored is not None:
            return stored
        return await self._claims.get(job_id)

    async def stored(self, job_id: str) -> Document | None:
        """The `ads` document of `job_id`, if the job ever finished (one scanning read on FerretDB)."""
        return await guard_store(lambda: self._collection.find_one({"_id": job_id}))

    async def run(
        self, job_id: str, *, replay: str | None = None, now: datetime | None = None
    ) -> Document | None:
        """The merged claims document of one run of the job, as this worker knows it (or as stored)."""
        return await self._claims.document(run_id(job_id, replay), now=now or datetime.now(UTC))

    async def claim(self, job: AdJob, now: datetime, lease_s: float, *, replay: str | None = None) -> Claim:
        """Take the right to generate `job` (in the run marked `replay`) until `now + lease_s`,
        or say the run is finished (`ClaimOutcome.ALREADY_DONE`, with the run's document).

        Raises `TransientError` (ClaimHeld) while another worker's lease is live: the
        message must come back later, not be dropped, in case that worker dies.
        """
        run = run_id(job.job_id, replay)
        claim = await self._claims.claim(
            run,
            now=now,
            lease_s=lease_s,
            # The latest request wins: a redelivered job may have been corrected.
            fields={
                "request": job.model_dump(mode="json"),
                "platform": job.platform.value,
                "claimed_at": now,
            },
            on_insert={"user_id": job.user_id},
        )
        if claim.outcome is ClaimOutcome.CLAIMED and claim.attempt > 1:
            # A retry: an earlier attempt may have recorded the run in `ads` and died before
            # the claims learned it. A read here costs less than a second model call.
            stored = await self.stored(job.job_id)
            recorded = find_run(stored, replay)
            if stored is not None and recorded is not None:
                latest = (stored.get("runs") or [recorded])[-1] is recorded
                data = _run_data(stored if latest else recorded)
                await self._claims.finish(run, now=now, data=data, status=recorded["status"])
                view = await self._claims.document(run, now=now)
                return Claim(ClaimOutcome.ALREADY_DONE, claim.attempt, view or claim.document)
        return claim

    async def mark_succeeded(
        self,
        job_id: str,
        generated: GeneratedCopy,
        *,
        replay: str | None = None,
        now: datetime | None = None,
    ) -> Document:
        """Record the run as succeeded; the job's `ads` document. If the run was recorded
        already (another worker won the race, or the first run's copy is stored), that record."""
        result: Document = {
            "variants": [variant.model_dump(mode="json") for variant in generated.variants],
            "model": generated.model,
            "generation_ms": generated.elapsed_ms,
        }
        return await self._conclude(
            job_id,
            replay=replay,
            status=Status.SUCCEEDED,
            result=result,
            spent=(generated.token_usage, generated.model_calls),
            error_class=None,
            now=now,
            job=None,
        )

    async def mark_failed(
        self,
        job_id: str,
        reason: str,
        error_class: str,
        *,
        status: Status = Status.FAILED,
        dead_letter_reason: str = PermanentError.reason,
        replay: str | None = None,
        model: str | None = None,
        token_usage: TokenUsage | None = None,
        model_calls: int = 0,
        job: AdJob | None = None,
        now: datetime | None = None,
    ) -> Document:
        """Record the run as ended in failure (`status` `failed` or `dead-lettered`) for good:
        it is not run again but by a replay. `token_usage` and `model_calls` are what the last
        attempt spent; `job` records a run that was never claimed. The job's `ads` document."""
        if status not in (Status.FAILED, Status.DEAD_LETTERED):
            raise ValueError(f"a failure ends {Status.FAILED!r} or {Status.DEAD_LETTERED!r}, not {status!r}")
        result: Document = {
            "error": reason,
            "error_class": error_class,
            "reason": dead_letter_reason,
            "model": model,
        }
        return await self._conclude(
            job_id,
            replay=replay,
            status=status,
            result=result,
            spent=(token_usage or no_usage(), model_calls),
            error_class=error_class,
            now=now,
            job=job,
        )

    async def mark_retrying(
        self,
        job_id: str,
        reason: str,
        error_class: str,
        *,
        replay: str | None = None,
        stage: str | None = None,
        token_usage: TokenUsage | None = None,
        model_calls: int = 0,
        now: datetime | None = None,
    ) -> None:
        """A transient failure: give up the lease so the retry can claim the job at once.

        `stage` says where it failed (`STAGE_MODEL`: the model call); `token_usage` and
        `model_calls` what the attempt paid for before it failed.
        """
        data: Document = {"error": reason, "error_class": error_class}
        if stage is not None:
            data["stage"] = stage
        note: Document = {"error_class": error_class}
        if model_calls or token_usage:
            note |= {"token_usage": dict(token_usage or no_usage()), "model_calls": model_calls}
        await self._claims.release(
            run_id(job_id, replay),
            status=Status.RETRYING.value,
            now=now or datetime.now(UTC),
            data=data,
            note=note,
        )

    async def purge(self, older_than: datetime) -> int:
        """Delete the records of jobs completed before `older_than`; how many were deleted.

        The store has no TTL index (FerretDB v1), so a periodic task calls this
        (`processors.retention.Purger`). One `delete_many` on `completed_at`, which every
        finished job's document has; on FerretDB it scans `ads` once.
        """
        result = await guard_store(
            lambda: self._collection.delete_many({"completed_at": {"$lt": older_than}})
        )
        return result.deleted_count

    async def aclose(self) -> None:
        """Wait for the bulk writes still running (call before closing the store client)."""
        await self._results.aclose()
        await self._claims.aclose()

    # ------------------------------------------------------------------ recording a run's end

    async def _conclude(
        self,
        job_id: str,
        *,
        replay: str | None,
        status: Status,
        result: Document,
        spent: tuple[TokenUsage, int],
        error_class: str | None,
        now: datetime | None,
        job: AdJob | None,
    ) -> Document:
        now = as_stored(now or datetime.now(UTC))
        run = run_id(job_id, replay)
        current = await self._claims.document(run, now=now)
        if current is not None and current.get("status") in TERMINAL:
            return await self.stored(job_id) or current  # recorded already: the first record stays
        before_usage, before_calls = _spent_so_far(current)
        last_usage, last_calls = spent
        usage = add_usage(before_usage, _usage_of(last_usage))
        data: Document = as_stored(
            result
            | {"token_usage": dict(usage), "model_calls": before_calls + last_calls, "completed_at": now}
        )
        note: Document = {"token_usage": dict(_usage_of(last_usage)), "model_calls": last_calls}
        if error_class is not None:
            note = {"error_class": error_class} | note
        view = await self._claims.finished_view(run, now=now, data=data, note=note, status=status.value)
        if view is None:
            if job is None:
                raise TransientError("ad document vanished before it was stored", error_class="ClaimRace")
            view = _unclaimed_view(run, job, now, status, data, note)
        view.pop("lease_until", None)
        entry: Document = {
            "run": 1,
            "replayed_from": replay,
            "status": status.value,
            "error_class": error_class,
            "model_calls": data["model_calls"],
            "token_usage": data["token_usage"],
            "attempts": view["attempts"],
            "completed_at": now,
        }
        document: Document = view | {"_id": job_id, "job_id": job_id, "runs": [entry]}
        if replay is None:
            document, data, final = await self._insert_first(document, data, status)
        else:
            document = await self._add_run(document, entry, replay)
            final = status
        await self._claims.finish(run, now=now, data=data, note=note, status=final.value)
        return document

    async def _insert_first(
        self, document: Document, data: Document, status: Status
    ) -> tuple[Document, Document, Status]:
        """Insert the first run's record; if one is stored (another worker won the race, or the
        job ran before the claims window), the stored one, and the claims record what it says."""
        job_id = document["_id"]
        try:
            await guard_store(lambda: self._results.submit(document))
        except DuplicateKeyError:
            stored = await self.stored(job_id)
            if stored is None:
                raise TransientError(
                    "ad document vanished after it was stored", error_class="ClaimRace"
                ) from None
            return stored, _run_data(stored), Status(stored.get("status", status.value))
        return document, data, status

    async def _add_run(self, document: Document, entry: Document, replay: str) -> Document:
        """Record a replay run: a new document if the job has none, else `$set` the latest
        run, `$inc` the totals and `$push` the run.

        The update filters on `_id` alone: FerretDB v1 serves only that filter without
        reading every document (another condition costs a full scan in its own process,
        about 1.5 s at 3,000 documents). A run is recorded by the one worker that holds
        its claim, and one whose record is found is not recorded again; two replays of one
        job recorded at the very same moment are both kept, and may share a run number.
        """
        job_id = document["_id"]
        usage = _usage_of(entry["token_usage"])
        for _ in range(_REPLAY_TRIES):
            stored = await self.stored(job_id)
            if stored is None:
                try:
                    await guard_store(functools.partial(self._collection.insert_one, document))
                except DuplicateKeyError:
                    continue
                return document
            if find_run(stored, replay) is not None:
                return stored  # recorded already
            runs = stored.get("runs")
            earlier = [_legacy_run(stored)] if runs is None else list(runs)
            pushed = as_stored(entry | {"run": len(earlier) + 1})
            latest = {key: value for key, value in document.items() if key not in _KEPT_ON_REPLAY}
            stale = _SUCCEEDED_FIELDS if entry["status"] != Status.SUCCEEDED.value else _FAILED_FIELDS
            update: Document = {
                "$inc": {
                    "token_usage.input_tokens": usage["input_tokens"],
                    "token_usage.output_tokens": usage["output_tokens"],
                    "token_usage.total_tokens": usage["total_tokens"],
                    "model_calls": int(entry["model_calls"]),
                },
            }
            if runs is None:  # stored before runs were kept
                update["$set"] = latest | {"runs": [*earlier, pushed]}
            else:
                update["$set"] = latest
                update["$push"] = {"runs": pushed}
            unset = {key: "" for key in stale if key in stored and key not in latest}
            if unset:
                update["$unset"] = unset
            await guard_store(functools.partial(self._collection.update_one, {"_id": job_id}, update))
            updated = await self.stored(job_id)
            if updated is not None:
                return updated
        raise TransientError(
            "the ad document changed while a replay run was recorded", error_class="ClaimRace"
        )


def _run_data(record: Document) -> Document:
    """What the claims' completion records of a stored run: its outcome and cost."""
    keys = ("variants", "model", "generation_ms", "error", "error_class", "reason", "completed_at")
    data = {key: record[key] for key in keys if key in record}
    data["token_usage"] = dict(_usage_of(record.get("token_usage")))
    data["model_calls"] = int(record.get("model_calls") or 0)
    return data


def _unclaimed_view(
    run: str, job: AdJob, now: datetime, status: Status, data: Document, note: Document
) -> Document:
    """The document of a run that ends before any claim (say, the store was down each time)."""
    return {
        "_id": run,
        "job_id": run,
        "user_id": job.user_id,
        "request": job.model_dump(mode="json"),
        "platform": job.platform.value,
        **data,
        "status": status.value,
        "attempts": 1,
        "created_at": now,
        "updated_at": now,
        "history": [{"attempt": 1, "at": now, "outcome": status.value, **note}],
    }
