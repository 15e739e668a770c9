"""The `ads` collection: one document per job (`_id` = job_id), its request and its copy.

It makes generation effectively-once under at-least-once delivery: a worker *claims*
a job before calling the model, a `succeeded` job is never generated again, and a job
another worker is generating right now (a live lease) is left alone.

Portable to FerretDB v1 and MongoDB: `insert_one` against the unique `_id`, and
`find_one_and_update` with a status guard; no transactions, TTL or partial indexes,
and no user-chosen keys in stored data (they could hold `.` or `$`).

Statuses: `processing` (leased to one worker until `lease_until`), `retrying` (a
transient failure; any worker may claim it), `failed` (a permanent failure; a
redelivery may claim it again), `succeeded` (final).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from processors.ads.generator import GeneratedCopy
from processors.ads.jobs import AdJob
from processors.errors import TransientError
from processors.store import guard_store

Document = dict[str, Any]


class Status(enum.StrEnum):
    PROCESSING = "processing"
    RETRYING = "retrying"
    FAILED = "failed"
    SUCCEEDED = "succeeded"


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    ALREADY_SUCCEEDED = "already_succeeded"


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    attempt: int
    document: Document


class AdStore:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection

    async def ensure_indexes(self) -> None:
        await guard_store(
            lambda: self._collection.create_index([("user_id", ASCENDING), ("created_at", DESCENDING)])
        )
        await guard_store(lambda: self._collection.create_index("status"))

    async def get(self, job_id: str) -> Document | None:
        return await guard_store(lambda: self._collection.find_one({"_id": job_id}))

    async def claim(self, job: AdJob, now: datetime, lease_s: float) -> Claim:
        """Take the right to generate `job` until `now + lease_s`, or say it is already done.

        Raises `TransientError` (ClaimHeld) while another worker's lease is live: the
        message must come back later, not be dropped, in case that worker dies.
        """
        lease_until = now + timedelta(seconds=lease_s)
        request = job.model_dump(mode="json")
        document: Document = {
            "_id": job.job_id,
            "job_id": job.job_id,
            "user_id": job.user_id,
            "platform": job.platform.value,
            "request": request,
            "status": Status.PROCESSING.value,
            "attempts": 1,
            "lease_until": lease_until,
            "created_at": now,
            "claimed_at": now,
            "updated_at": now,
        }
        try:
            await guard_store(lambda: self._collection.insert_one(document))
            return Claim(ClaimOutcome.CLAIMED, attempt=1, document=document)
        except DuplicateKeyError:
            pass
        claimed = await guard_store(
            lambda: self._collection.find_one_and_update(
                {
                    "_id": job.job_id,
                    "$or": [
                        {"status": {"$in": [Status.RETRYING.value, Status.FAILED.value]}},
                        {"status": Status.PROCESSING.value, "lease_until": {"$lt": now}},
                    ],
                },
                {
                    # The latest request wins: a redelivered job may have been corrected.
                    "$set": {
                        "status": Status.PROCESSING.value,
                        "request": request,
                        "platform": job.platform.value,
                        "lease_until": lease_until,
                        "claimed_at": now,
                        "updated_at": now,
                    },
                    "$inc": {"attempts": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
        )
        if claimed is not None:
            return Claim(ClaimOutcome.CLAIMED, attempt=int(claimed["attempts"]), document=claimed)
        current = await self.get(job.job_id)
        if current is None:  # deleted between the two calls
            raise TransientError(
                "ad document vanished during claim", error_class="ClaimRace", retry_after_ms=100
            )
        if current["status"] == Status.SUCCEEDED.value:
            return Claim(ClaimOutcome.ALREADY_SUCCEEDED, attempt=int(current["attempts"]), document=current)
        remaining_ms = max(1, int((aware(current["lease_until"]) - now).total_seconds() * 1000))
        raise TransientError(
            "another worker is generating this job", error_class="ClaimHeld", retry_after_ms=remaining_ms
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


def aware(value: datetime) -> datetime:
    """A stored datetime as UTC-aware: PyMongo returns naive UTC unless the client is tz_aware."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
