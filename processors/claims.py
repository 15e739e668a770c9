"""Claims with a lease: one worker at a time works on a job, and a done job stays done.

A collection holds one document per job (`_id` = job_id) with a `status`, an
`attempts` counter and, while a worker holds the job, `lease_until`. A worker claims
the job before work that must happen once (sending an email, calling a model):

- the first claim inserts the document;
- a later claim takes the job over when it is `retrying` or `failed`, or when the
  holder's lease has expired (the holder died), and counts the attempt;
- a job in the *done* status is not claimed again: the caller answers from its document;
- while another worker's lease is live, the claim raises `TransientError` (ClaimHeld)
  with the time left on the lease, so the message comes back later instead of being
  dropped.

Releasing a claim (recording a failure or the result) stays with each store: what it
records differs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from processors.errors import TransientError
from processors.store import Document, aware, guard_store

RETRYING = "retrying"
"""A transient failure released the job: any worker may claim it at once."""
FAILED = "failed"
"""A permanent failure released the job: a redelivery (a replay) may claim it again."""

# Fields the claim itself owns; a store's own fields must not overwrite them.
PROTOCOL_FIELDS = frozenset(
    {"_id", "job_id", "status", "attempts", "lease_until", "created_at", "updated_at"}
)
# The document changed between two calls of one claim: look again soon.
_RACE_RETRY_AFTER_MS = 100


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    ALREADY_DONE = "already_done"


@dataclass(frozen=True)
class Claim:
    """What a claim got: the job (`CLAIMED`) or the news that it is done (`ALREADY_DONE`).

    `attempt` counts the claims of the job so far; `document` is the job's document as
    stored after the claim.
    """

    outcome: ClaimOutcome
    attempt: int
    document: Document


class Claims:
    """Claims on the jobs of one collection.

    `working` is the status of a claimed job, `done` the final status of a finished one.
    Uses only `insert_one` against the unique `_id` and `find_one_and_update` guarded by
    status, so it runs on FerretDB v1 as on MongoDB: no transactions, TTL or partial
    indexes, no arrayFilters.
    """

    def __init__(self, collection: AsyncCollection[Document], *, working: str, done: str) -> None:
        if len({working, done, RETRYING, FAILED}) != 4:
            raise ValueError(f"the statuses must differ: {working!r}, {done!r}, {RETRYING!r}, {FAILED!r}")
        self._collection = collection
        self.working = working
        self.done = done

    async def claim(
        self,
        job_id: str,
        *,
        now: datetime,
        lease_s: float,
        fields: Document | None = None,
        on_insert: Document | None = None,
    ) -> Claim:
        """Take the right to work on `job_id` until `now + lease_s`, or say it is already done.

        `fields` are set by every claim (the latest request wins); `on_insert` only by the
        claim that creates the document.

        Raises `TransientError`: `ClaimHeld` while another worker's lease is live, with
        `retry_after_ms` the time left on it; `ClaimRace` when the document changed or
        vanished during the claim.
        """
        fields = fields or {}
        on_insert = on_insert or {}
        clashing = PROTOCOL_FIELDS & (fields.keys() | on_insert.keys())
        if clashing:
            raise ValueError(f"fields owned by the claim: {sorted(clashing)}")
        lease_until = now + timedelta(seconds=lease_s)
        document: Document = {
            "_id": job_id,
            "job_id": job_id,
            **on_insert,
            **fields,
            "status": self.working,
            "attempts": 1,
            "lease_until": lease_until,
            "created_at": now,
            "updated_at": now,
        }
        try:
            await guard_store(lambda: self._collection.insert_one(document))
            return Claim(ClaimOutcome.CLAIMED, attempt=1, document=document)
        except DuplicateKeyError:
            pass
        taken = await guard_store(
            lambda: self._collection.find_one_and_update(
                {
                    "_id": job_id,
                    "$or": [
                        {"status": {"$in": [RETRYING, FAILED]}},
                        {"status": self.working, "lease_until": {"$lt": now}},
                    ],
                },
                {
                    "$set": {**fields, "status": self.working, "lease_until": lease_until, "updated_at": now},
                    "$inc": {"attempts": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
        )
        if taken is not None:
            return Claim(ClaimOutcome.CLAIMED, attempt=int(taken["attempts"]), document=taken)
        current = await guard_store(lambda: self._collection.find_one({"_id": job_id}))
        if current is None:  # deleted between the two calls
            raise TransientError(
                f"{self._collection.name} document vanished during the claim",
                error_class="ClaimRace",
                retry_after_ms=_RACE_RETRY_AFTER_MS,
            )
        if current["status"] == self.done:
            return Claim(ClaimOutcome.ALREADY_DONE, attempt=int(current["attempts"]), document=current)
        held_until = current.get("lease_until")
        if current["status"] != self.working or held_until is None:
            # The holder released the job between the two calls: it may be claimable now.
            raise TransientError(
                f"{self._collection.name} document changed during the claim",
                error_class="ClaimRace",
                retry_after_ms=_RACE_RETRY_AFTER_MS,
            )
        remaining_ms = max(1, int((aware(held_until) - now).total_seconds() * 1000))
        raise TransientError(
            f"another worker is {self.working} this job", error_class="ClaimHeld", retry_after_ms=remaining_ms
        )
