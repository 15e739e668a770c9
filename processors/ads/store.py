"""The ads store: the copy of every succeeded job, and the claims that keep generation once.

It makes generation effectively-once under at-least-once delivery: a worker *claims* a
job before calling the model (`processors.claims`), a `succeeded` job is not generated
again, and a job another worker is generating right now (a live lease) is left alone.

Two parts, both written with inserts only (FerretDB v1 scans a collection for every read
or update, never for an insert):

- `ads`: one document per succeeded job (`_id` = job_id), inserted once and kept until
  `purge` deletes it (`LEDGER_RETENTION_DAYS` after `completed_at`): the request, `status:
  succeeded`, variants, model, token usage, attempts, history and timings. The first copy
  stored stays.
- `ads_claims_<YYYYMMDD>`: the claims, releases and completions of the jobs, in daily
  buckets dropped after two days. A redelivered job is answered from them without a
  model call for at least a day after its last claim.

`get(job_id)` reads `ads`, then the claims (`processing`, `retrying` or `failed` jobs).

Portable to FerretDB v1 and MongoDB: no transactions, TTL or partial indexes, and no
user-chosen keys in stored data (they could hold `.` or `$`).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from processors import claims
from processors.ads.generator import GeneratedCopy
from processors.ads.jobs import AdJob
from processors.batching import Batcher
from processors.buckets import DAY_S
from processors.claims import BatchSettings, Claim, Claims
from processors.errors import TransientError
from processors.store import Document, guard_store, insert_each


class Status(enum.StrEnum):
    PROCESSING = "processing"
    RETRYING = claims.RETRYING
    FAILED = claims.FAILED
    SUCCEEDED = "succeeded"


class AdStore:
    """`collection` (`ads`) keeps the succeeded copies; the claims go to `<its name>_claims_<day>`."""

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
        """The stored copy of a succeeded job; else the job's claims document; else None."""
        stored = await guard_store(lambda: self._collection.find_one({"_id": job_id}))
        if stored is not None:
            return stored
        return await self._claims.get(job_id)

    async def claim(self, job: AdJob, now: datetime, lease_s: float) -> Claim:
        """Take the right to generate `job` until `now + lease_s`, or say it succeeded already
        (`ClaimOutcome.ALREADY_DONE`, with the stored copy in `document`).

        Raises `TransientError` (ClaimHeld) while another worker's lease is live: the
        message must come back later, not be dropped, in case that worker dies.
        """
        return await self._claims.claim(
            job.job_id,
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

    async def mark_succeeded(
        self, job_id: str, generated: GeneratedCopy, *, now: datetime | None = None
    ) -> Document:
        """Store the copy and return the document; if another worker won the race, its document."""
        now = now or datetime.now(UTC)
        result: Document = {
            "variants": [variant.model_dump(mode="json") for variant in generated.variants],
            "model": generated.model,
            "token_usage": dict(generated.token_usage),
            "model_calls": generated.model_calls,
            "generation_ms": generated.elapsed_ms,
            "completed_at": now,
        }
        view = await self._claims.finished_view(job_id, now=now, data=result)
        if view is None:
            raise TransientError("ad document vanished before it was stored", error_class="ClaimRace")
        document: Document = view
        # The copy is kept first, then the claims learn that the job is done: a failure in
        # between makes a retry generate again and find this copy stored.
        try:
            await guard_store(lambda: self._results.submit(view))
        except DuplicateKeyError:
            stored = await guard_store(lambda: self._collection.find_one({"_id": job_id}))
            if stored is None:
                raise TransientError(
                    "ad document vanished after it was stored", error_class="ClaimRace"
                ) from None
            document = stored
            result = {key: stored[key] for key in result if key in stored}
        await self._claims.finish(job_id, now=now, data=result)
        return document

    async def mark_failed(
        self, job_id: str, reason: str, error_class: str, *, now: datetime | None = None
    ) -> None:
        """A permanent failure: the job is not retried unless it is published again."""
        await self._release(job_id, Status.FAILED, reason, error_class, now)

    async def mark_retrying(
        self, job_id: str, reason: str, error_class: str, *, now: datetime | None = None
    ) -> None:
        """A transient failure: give up the lease so the retry can claim the job at once."""
        await self._release(job_id, Status.RETRYING, reason, error_class, now)

    async def purge(self, older_than: datetime) -> int:
        """Delete the copies of jobs completed before `older_than`; how many were deleted.

        The store has no TTL index (FerretDB v1), so a periodic task calls this
        (`processors.retention.Purger`). One `delete_many` on `completed_at`, which every
        stored copy has; on FerretDB it scans `ads` once.
        """
        result = await guard_store(
            lambda: self._collection.delete_many({"completed_at": {"$lt": older_than}})
        )
        return result.deleted_count

    async def aclose(self) -> None:
        """Wait for the bulk writes still running (call before closing the store client)."""
        await self._results.aclose()
        await self._claims.aclose()

    async def _release(
        self, job_id: str, status: Status, reason: str, error_class: str, now: datetime | None
    ) -> None:
        await self._claims.release(
            job_id,
            status=status.value,
            now=now or datetime.now(UTC),
            data={"error": reason, "error_class": error_class},
            note={"error_class": error_class},
        )
