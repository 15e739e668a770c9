"""The `ads` collection: one document per job (`_id` = job_id), its request and its copy.

It makes generation effectively-once under at-least-once delivery: a worker *claims*
a job before calling the model (`processors.claims`), a `succeeded` job is never
generated again, and a job another worker is generating right now (a live lease) is
left alone.

Portable to FerretDB v1 and MongoDB: no transactions, TTL or partial indexes, and no
user-chosen keys in stored data (they could hold `.` or `$`).

Statuses: `processing` (leased to one worker until `lease_until`), `retrying` (a
transient failure; any worker may claim it), `failed` (a permanent failure; a
redelivery may claim it again), `succeeded` (final).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from processors import claims
from processors.ads.generator import GeneratedCopy
from processors.ads.jobs import AdJob
from processors.claims import Claim, Claims
from processors.errors import TransientError
from processors.store import Document, guard_store


class Status(enum.StrEnum):
    PROCESSING = "processing"
    RETRYING = claims.RETRYING
    FAILED = claims.FAILED
    SUCCEEDED = "succeeded"


class AdStore:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection
        self._claims = Claims(collection, working=Status.PROCESSING.value, done=Status.SUCCEEDED.value)

    async def ensure_indexes(self) -> None:
        await guard_store(
            lambda: self._collection.create_index([("user_id", ASCENDING), ("created_at", DESCENDING)])
        )
        await guard_store(lambda: self._collection.create_index("status"))

    async def get(self, job_id: str) -> Document | None:
        return await guard_store(lambda: self._collection.find_one({"_id": job_id}))

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
        stored = await guard_store(
            lambda: self._collection.find_one_and_update(
                {"_id": job_id, "status": {"$ne": Status.SUCCEEDED.value}},
                {
                    "$set": {
                        "status": Status.SUCCEEDED.value,
                        "variants": [variant.model_dump(mode="json") for variant in generated.variants],
                        "model": generated.model,
                        "token_usage": dict(generated.token_usage),
                        "model_calls": generated.model_calls,
                        "generation_ms": generated.elapsed_ms,
                        "completed_at": now,
                        "updated_at": now,
                    },
                    "$unset": {"lease_until": "", "error": "", "error_class": ""},
                },
                return_document=ReturnDocument.AFTER,
            )
        )
        if stored is not None:
            return stored
        current = await self.get(job_id)
        if current is None:
            raise TransientError("ad document vanished before it was stored", error_class="ClaimRace")
        return current

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

    async def _release(
        self, job_id: str, status: Status, reason: str, error_class: str, now: datetime | None
    ) -> None:
        now = now or datetime.now(UTC)
        await guard_store(
            lambda: self._collection.update_one(
                {"_id": job_id, "status": {"$ne": Status.SUCCEEDED.value}},
                {
                    "$set": {
                        "status": status.value,
                        "error": reason,
                        "error_class": error_class,
                        "updated_at": now,
                    },
                    "$unset": {"lease_until": ""},
                },
            )
        )
