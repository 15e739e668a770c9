"""The delivery ledger: one document per `job_id` in the store.

It makes sending effectively-once under at-least-once delivery. Before sending, a
worker *claims* the job (`processors.claims`); a job already `sent` is never sent
again, and a job another worker is sending right now (a live lease) is not touched.
It never holds the OTP code or the link's token.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from processors import claims
from processors.claims import Claim, Claims
from processors.store import guard_store


class Status(enum.StrEnum):
    SENDING = "sending"
    SENT = "sent"
    RETRYING = claims.RETRYING
    FAILED = claims.FAILED


class DeliveryLedger:
    def __init__(self, collection: AsyncCollection[dict[str, Any]], *, lease_s: float) -> None:
        self._collection = collection
        self._claims = Claims(collection, working=Status.SENDING.value, done=Status.SENT.value)
        self._lease_s = lease_s

    async def ensure_indexes(self) -> None:
        await guard_store(lambda: self._collection.create_index("job_id", unique=True))
        await guard_store(lambda: self._collection.create_index("status"))

    async def get(self, job_id: str) -> dict[str, Any] | None:
        return await guard_store(lambda: self._collection.find_one({"_id": job_id}))

    async def claim(self, *, job_id: str, email_type: str, recipient: str, now: datetime) -> Claim:
        """Take the right to send `job_id` now, or say it was sent (`ClaimOutcome.ALREADY_DONE`).

        Raises `TransientError` (ClaimHeld) while another worker's lease is live: the
        message must come back later, not be dropped, in case that worker dies.
        """
        return await self._claims.claim(
            job_id,
            now=now,
            lease_s=self._lease_s,
            on_insert={"type": email_type, "recipient": recipient, "history": []},
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
