"""Batch calls recorded before they are made, so that an unknown outcome is resolved by
repeating exactly the same call.

Resend answers a repeated `Idempotency-Key` with the first answer only when the payload
is the same; with another payload it refuses (409). So a batch whose outcome is unknown
(a timeout, a 5xx, a crash) can only be settled by sending the very same list of emails
with the very same key again. The record keeps both, with the job of each entry.

Records live in daily buckets `<prefix>_<YYYYMMDD>` (`processors.buckets`), one insert
per batch and a read by `_id` only when an outcome was unknown. The rendered emails are
kept as sent (an OTP code included) until the bucket is dropped, two to three days
later: as long as the job messages themselves stay on their Kafka topics, or less. They
are stored as zlib-compressed JSON: a hundred rendered emails are about 300 KB as
documents, and writing that twice a second made the store stall for about half a second
every nine batches (about every 4 MB written: SQLite's WAL checkpoint behind FerretDB,
we believe; not verified).
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import Binary
from pymongo.asynchronous.database import AsyncDatabase

from processors.buckets import DAY_S, TimeBuckets
from processors.store import Document, guard_store

# Buckets kept: the current one, the previous one (a batch recorded just before midnight)
# and one more for workers whose clocks lag.
_KEEP = 3


@dataclass(frozen=True)
class RecordedBatch:
    """One batch call: `emails[i]` is the request entry for the job `members[i]`."""

    batch_id: str
    idempotency_key: str
    members: tuple[str, ...]
    emails: tuple[Mapping[str, Any], ...]
    at: datetime

    def __post_init__(self) -> None:
        if len(self.members) != len(self.emails):
            raise ValueError("a batch has one email per member")
        if len(set(self.members)) != len(self.members):
            raise ValueError("a job appears once in a batch")


class BatchRecords:
    def __init__(self, database: AsyncDatabase[Document], prefix: str, *, bucket_s: int = DAY_S) -> None:
        self.buckets = TimeBuckets(database, prefix, bucket_s=bucket_s)
        self._latest: int | None = None

    async def prepare(self, now: datetime) -> list[str]:
        """Drop buckets too old to be asked for; the names dropped."""
        period = self.buckets.period(now)
        self._latest = period
        return await guard_store(functools.partial(self.buckets.drop_before, period - _KEEP + 1))

    async def record(self, batch: RecordedBatch) -> None:
        """Store `batch` (before the call). Raises on a store error: then do not make the call."""
        period = self.buckets.period(batch.at)
        if self._latest is None or period > self._latest:
            await self.prepare(batch.at)
        doc: Document = {
            "_id": batch.batch_id,
            "idempotency_key": batch.idempotency_key,
            "members": list(batch.members),
            "emails_zlib": Binary(zlib.compress(json.dumps([dict(e) for e in batch.emails]).encode())),
            "at": batch.at,
        }
        collection = self.buckets.collection(period)
        await guard_store(functools.partial(collection.insert_one, doc))

    async def get(self, batch_id: str, *, at: datetime) -> RecordedBatch | None:
        """The batch recorded as `batch_id` at about `at` (its note's time), or None."""
        period = self.buckets.period(at)
        for p in (period, period + 1, period - 1):
            collection = self.buckets.collection(p)
            doc = await guard_store(functools.partial(collection.find_one, {"_id": batch_id}))
            if doc is not None:
                return _from_doc(doc)
        return None


def _from_doc(doc: Document) -> RecordedBatch:
    members: Sequence[str] = doc["members"]
    emails: Sequence[Mapping[str, Any]] = json.loads(zlib.decompress(doc["emails_zlib"]))
    return RecordedBatch(
        batch_id=doc["_id"],
        idempotency_key=doc["idempotency_key"],
        members=tuple(members),
        emails=tuple(emails),
        at=doc["at"],
    )
