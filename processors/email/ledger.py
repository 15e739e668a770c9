"""The delivery ledger: one document per `job_id` in the store.

It makes sending effectively-once under at-least-once delivery. Before sending, a
worker *claims* the job atomically; a job already `sent` is never sent again, and a
job another worker is sending right now (a live lease) is not touched. It never holds
the OTP code or the link's token.

Portable to FerretDB v1 and MongoDB: `insert_one` against the unique `_id`, and
`find_one_and_update` with a status guard; no transactions, no TTL indexes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from processors.errors import TransientError
from processors.store import guard_store


class Status(enum.StrEnum):
    SENDING = "sending"
    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    ALREADY_SENT = "already_sent"


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    attempt: int
    provider_message_id: str | None = None


class DeliveryLedger:
    def __init__(self, collection: AsyncCollection[dict[str, Any]], *, lease_s: float) -> None:
        self._collection = collection
        self._lease = timedelta(seconds=lease_s)

    async def ensure_indexes(self) -> None:
        await guard_store(lambda: self._collection.create_index("job_id", unique=True))
        await guard_store(lambda: self._collection.create_index("status"))

    async def get(self, job_id: str) -> dict[str, Any] | None:
        return await guard_store(lambda: self._collection.find_one({"_id": job_id}))

    async def claim(self, *, job_id: str, email_type: str, recipient: str, now: datetime) -> Claim:
        """Take the right to send `job_id` now, or say why not.

        Raises `TransientError` (ClaimHeld) while another worker's lease is live: the
        message must come back later, not be dropped, in case that worker dies.
        """
        lease_until = now + self._lease
        try:
            await guard_store(
                lambda: self._collection.insert_one(
                    {
                        "_id": job_id,
                        "job_id": job_id,
                        "type": email_type,
                        "recipient": recipient,
                        "status": Status.SENDING.value,
                        "attempts": 1,
                        "lease_until": lease_until,
                        "created_at": now,
                        "updated_at": now,
                        "history": [],
                    }
                )
            )
            return Claim(ClaimOutcome.CLAIMED, attempt=1)
        except DuplicateKeyError:
            pass
        doc = await guard_store(
            lambda: self._collection.find_one_and_update(
                {
                    "_id": job_id,
                    "$or": [
                        {"status": {"$in": [Status.RETRYING.value, Status.FAILED.value]}},
                        {"status": Status.SENDING.value, "lease_until": {"$lt": now}},
                    ],
                },
                {
                    "$set": {"status": Status.SENDING.value, "lease_until": lease_until, "updated_at": now},
                    "$inc": {"attempts": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
        )
        if doc is not None:
            return Claim(ClaimOutcome.CLAIMED, attempt=int(doc["attempts"]))
        current = await self.get(job_id)
        if current is None:  # deleted between the two calls: try again later
            raise TransientError(
                "ledger entry vanished during claim", error_class="ClaimRace", retry_after_ms=100
            )
        if current["status"] == Status.SENT.value:
            return Claim(
                ClaimOutcome.ALREADY_SENT,
                attempt=int(current["attempts"]),
                provider_message_id=current.get("provider_message_id"),
            )
        held_until = _aware(current["lease_until"])
        remaining_ms = max(1, int((held_until - now).total_seconds() * 1000))
        raise TransientError(
            "another worker is sending this job", error_class="ClaimHeld", retry_after_ms=remaining_ms
        )

    async def mark_sent(
        self, *, job_id: str, attempt: int, provider: str, provider_message_id: str, now: datetime
    ) -> None:
        await guard_store(
            lambda: self._collection.update_one(
                {"_id": job_id},
                {
                    "$set": {
                        "status": Status.SENT.value,
                        "provider": provider,
                        "provider_message_id": provider_message_id,
                        "sent_at": now,
                        "updated_at": now,
                    },
                    "$unset": {"lease_until": ""},
                    "$push": {"history": {"attempt": attempt, "at": now, "outcome": "sent"}},
                },
            )
        )

    async def mark_failed(
        self, *, job_id: str, attempt: int, error_class: str, permanent: bool, now: datetime
    ) -> None:
        status = Status.FAILED if permanent else Status.RETRYING
        await guard_store(
            lambda: self._collection.update_one(
                {"_id": job_id, "status": Status.SENDING.value},
                {
                    "$set": {"status": status.value, "last_error": error_class, "updated_at": now},
                    "$unset": {"lease_until": ""},
                    "$push": {
                        "history": {
                            "attempt": attempt,
                            "at": now,
                            "outcome": status.value,
                            "error": error_class,
                        }
                    },
                },
            )
        )


def _aware(value: datetime) -> datetime:
    # PyMongo returns naive UTC datetimes unless the client is tz_aware.
    return value if value.tzinfo else value.replace(tzinfo=UTC)
