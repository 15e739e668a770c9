"""The delivery events received from Resend, stored once each, for operators and erasure.

Each event is one insert, `_id` its event id (Resend's `svix-id`), with `email_id`,
`kind`, `resend_type`, `occurred_at`, `bounce_type`, `bounce_subtype` and `recorded_at`;
no address (find an address's emails through the ledger). Inserting an id that is there
already fails on the unique `_id` without a scan: that is how a replayed event is told
apart (`record` answers False). Concurrent records share one `insert_many(ordered=False)`
(`processors.batching`).

The documents live in daily buckets, `<name>_<YYYYMMDD>` (`processors.buckets`), by the
day the event *occurred*: every delivery of one event, however late Resend retries it,
goes to the same bucket and collides there. Buckets older than `retention_days` are
dropped whole, which is the retention FerretDB's missing TTL indexes can't give. An
event older than that (or dated more than a day ahead) goes to the nearest bucket kept.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from processors.batching import Batcher
from processors.buckets import TimeBuckets
from processors.email.events import DeliveryEvent
from processors.store import Document, as_stored, guard_store, insert_each

log = logging.getLogger(__name__)

COLLECTION = "email_delivery_events"
_FIELDS = ("email_id", "kind", "resend_type", "occurred_at", "bounce_type", "bounce_subtype", "recorded_at")


class DeliveryEvents:
    def __init__(
        self,
        database: AsyncDatabase[Document],
        name: str = COLLECTION,
        *,
        retention_days: int = 30,
        max_batch: int = 256,
        insert_delay_s: float = 0.002,
    ) -> None:
        if retention_days < 1:
            raise ValueError(f"retention_days must be at least 1, not {retention_days}")
        self.buckets = TimeBuckets(database, name)
        self.retention_days = retention_days
        self._max_batch = max_batch
        self._insert_delay_s = insert_delay_s
        self._inserters: dict[int, Batcher[Document, None]] = {}
        self._indexed: set[int] = set()
        self._latest: int | None = None
        self._rotating = asyncio.Lock()

    async def prepare(self, now: datetime) -> list[str]:
        """Index today's bucket and drop the buckets older than `retention_days`; the names
        dropped. The worker calls it at start; `record` does it when a new day begins."""
        period = self.buckets.period(now)
        async with self._rotating:
            self._latest = max(period, self._latest or period)
            await self._ensure_index(self._latest)
            return await self._expire(self._latest)

    async def record(self, event: DeliveryEvent, now: datetime) -> bool:
        """Store `event`; False if its id was recorded already (Resend sent it again)."""
        period = self.buckets.period(now)
        if self._latest is None or period > self._latest:
            await self.prepare(now)
        bucket = min(
            max(self.buckets.period(event.occurred_at), period - self.retention_days + 1), period + 1
        )
        await self._ensure_index(bucket)
        document: Document = as_stored(
            {
                "_id": event.event_id,
                "email_id": event.email_id,
                "kind": event.kind.value,
                "resend_type": event.resend_type,
                "occurred_at": event.occurred_at,
                "bounce_type": event.bounce_type,
                "bounce_subtype": event.bounce_subtype,
                "recorded_at": now,
            }
        )
        try:
            await guard_store(functools.partial(self._inserter(bucket).submit, document))
        except DuplicateKeyError:
            return False
        return True

    async def for_email_ids(self, email_ids: Iterable[str]) -> dict[str, list[Document]]:
        """The events of these emails, oldest first, by email id (operators: it reads every bucket).

        Each event is `event_id` and the stored fields."""
        wanted = sorted(set(email_ids))
        found: dict[str, list[Document]] = defaultdict(list)
        if not wanted:
            return {}
        for period in await guard_store(self.buckets.existing):
            for doc in await guard_store(functools.partial(_find, self.buckets.collection(period), wanted)):
                found[doc["email_id"]].append({"event_id": doc["_id"], **{k: doc.get(k) for k in _FIELDS}})
        return {
            email_id: sorted(events, key=lambda e: (e["occurred_at"], e["event_id"]))
            for email_id, events in found.items()
        }

    async def erase(self, email_ids: Iterable[str]) -> int:
        """Delete the events of these emails from every bucket; how many were deleted."""
        wanted = sorted(set(email_ids))
        if not wanted:
            return 0
        deleted = 0
        for period in await guard_store(self.buckets.existing):
            collection = self.buckets.collection(period)
            result = await guard_store(
                functools.partial(collection.delete_many, {"email_id": {"$in": wanted}})
            )
            deleted += result.deleted_count
        return deleted

    async def aclose(self) -> None:
        """Wait for the inserts still running."""
        for inserter in list(self._inserters.values()):
            await inserter.aclose()

    def _inserter(self, period: int) -> Batcher[Document, None]:
        batcher = self._inserters.get(period)
        if batcher is None:
            collection = self.buckets.collection(period)
            batcher = self._inserters[period] = Batcher(
                lambda docs: insert_each(collection, docs),
                max_batch=self._max_batch,
                max_delay_s=self._insert_delay_s,
            )
        return batcher

    async def _ensure_index(self, period: int) -> None:
        if period in self._indexed:
            return
        # Real MongoDB serves `for_email_ids` and `erase` from it; FerretDB v1 keeps it cheaply.
        collection = self.buckets.collection(period)
        await guard_store(functools.partial(collection.create_index, "email_id"))
        self._indexed.add(period)

    async def _expire(self, period: int) -> list[str]:
        # Never by a clock ahead of this machine's: a `now` far in the future must not drop
        # the buckets still in use.
        oldest_kept = min(period, self.buckets.period(datetime.now(UTC))) - self.retention_days + 1
        for old in [p for p in self._inserters if p < oldest_kept]:
            self._inserters.pop(old, None)
        self._indexed = {p for p in self._indexed if p >= oldest_kept}
        dropped = await guard_store(functools.partial(self.buckets.drop_before, oldest_kept))
        if dropped:
            log.info("dropped expired delivery-event buckets %s", ", ".join(dropped))
        return dropped


async def _find(collection: AsyncCollection[Document], email_ids: list[str]) -> list[Document]:
    return await collection.find({"email_id": {"$in": email_ids}}).to_list()
