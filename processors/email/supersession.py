"""Newer codes win: which codes were sent, so that an older one coming up later is dropped.

A `SEND_OTP` job for a recipient and a purpose supersedes the older ones not yet sent.
"Older" is by issue time: the Kafka timestamp of the job's first publish, in epoch ms,
carried through retries; only a strictly newer code supersedes. After sending a code the
worker calls `record_sent`; before sending one it asks `newer_sent`, and drops the job as
`superseded` if the answer is yes.

**Storage: inserts only, in daily buckets.** One document per code sent: `_id`
`<key>:<issued_at_ms>:<job_id>`, `key` and `issued_at_ms`; `key` is `code_key(recipient,
purpose)`, a hash. Neither the code nor the address is stored. A redelivered job's second
record collides on `_id`, which is fine. Records go into the bucket of the day they are
sent (`processors.buckets`). A code lives at most a day (`expires_in_minutes <= 1440`), so
a newer one that matters was sent less than a day before an older one comes up: reading
today's and yesterday's buckets sees it. Buckets older than that and one more day (for
workers whose clocks lag) are dropped.

**Reads scan.** FerretDB v1 serves no query from an index (on SQLite only an `_id`
equality is filtered before decoding), so `find({"key": {"$in": [...]}})` costs a scan of
each bucket whatever the number of keys. Concurrent `newer_sent` calls are therefore
coalesced by a `Batcher` into one such `find` per bucket; the scan's cost, not the
number of keys, sets the rate (see `benchmarks/supersession_shape.py`). An in-process
memo (key -> the newest issue time this process recorded or read) answers "yes" without
a read; a "no" is only ever answered by the store, since another process may have sent a
newer code since.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from processors.batching import Batcher
from processors.buckets import DAY_S, TimeBuckets
from processors.claims import BatchSettings
from processors.store import Document, guard_store, insert_each

log = logging.getLogger(__name__)

# Buckets read: today's and yesterday's (a code lives at most a day).
_WINDOW = 2
# Buckets kept: the window and one more, for workers whose clocks lag.
_KEEP = _WINDOW + 1
_KEY_HEX_CHARS = 32
_PROJECTION = {"_id": 0, "key": 1, "issued_at_ms": 1}


def code_key(recipient: str, purpose: str) -> str:
    """The key of a recipient's codes for `purpose`: the same for every spelling of the address's case."""
    digest = hashlib.sha256(f"{recipient.strip().lower()}\0{purpose}".encode())
    return digest.hexdigest()[:_KEY_HEX_CHARS]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LatestCodes:
    """The codes sent, by `code_key`, in the daily buckets `<prefix>_<YYYYMMDD>` of `database`.

    `clock` is this machine's time; it only keeps a `now` far ahead from dropping buckets
    still in use.
    """

    def __init__(
        self,
        database: AsyncDatabase[Document],
        prefix: str = "email_codes",
        *,
        memo_size: int = 20_000,
        batching: BatchSettings | None = None,
        index_key: bool = True,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.buckets = TimeBuckets(database, prefix, bucket_s=DAY_S)
        self._batching = batching or BatchSettings()
        self._index_key = index_key
        self._clock = clock
        self._memo: OrderedDict[str, int] = OrderedDict()
        self._memo_size = memo_size
        self._inserters: dict[int, Batcher[Document, None]] = {}
        self._readers: dict[int, Batcher[str, int | None]] = {}
        self._latest: int | None = None
        self._rotating = asyncio.Lock()
        self.memo_answers = 0
        """`newer_sent` calls answered from the memo."""
        self.store_answers = 0
        """`newer_sent` calls answered by reading the store."""

    async def record_sent(self, key: str, issued_at_ms: int, job_id: str, now: datetime) -> None:
        """Record that the code of `job_id` for `key`, issued at `issued_at_ms`, was sent at `now`.

        Recording it again (a redelivered job) is fine. Raises `TransientError` when the
        store is unreachable; the code was sent all the same, and this process remembers it.
        """
        self._remember(key, issued_at_ms)
        period = await self._enter(now)
        doc: Document = {"_id": f"{key}:{issued_at_ms}:{job_id}", "key": key, "issued_at_ms": issued_at_ms}
        with contextlib.suppress(DuplicateKeyError):  # recorded already: a redelivered job
            await guard_store(functools.partial(self._inserter(period).submit, doc))

    async def newer_sent(self, key: str, issued_at_ms: int, now: datetime) -> bool:
        """Whether a code for `key` issued strictly after `issued_at_ms` was sent.

        Raises `TransientError` when the store is unreachable.
        """
        known = self._recall(key)
        if known is not None and known > issued_at_ms:
            self.memo_answers += 1
            return True
        period = await self._enter(now)
        found = await asyncio.gather(
            *(guard_store(functools.partial(self._reader(p).submit, key)) for p in (period - 1, period))
        )
        self.store_answers += 1
        newest = max((f for f in found if f is not None), default=None)
        if newest is None:
            return False
        return self._remember(key, newest) > issued_at_ms

    async def prepare(self, now: datetime) -> list[str]:
        """Create today's bucket (and its `key` index) and drop expired ones; the names of
        the buckets dropped. The worker calls it at start; the calls above do the same on
        their own when a new day begins."""
        period = self.buckets.period(now)
        async with self._rotating:
            await self._ensure(period)
            self._latest = max(period, self._latest or period)
            return await self._expire(self._latest)

    async def aclose(self) -> None:
        """Wait for the bulk calls still running."""
        for inserter in list(self._inserters.values()):
            await inserter.aclose()
        for reader in list(self._readers.values()):
            await reader.aclose()

    # ------------------------------------------------------------------ memo

    def _recall(self, key: str) -> int | None:
        known = self._memo.get(key)
        if known is not None:
            self._memo.move_to_end(key)
        return known

    def _remember(self, key: str, issued_at_ms: int) -> int:
        """Keep the newer of `issued_at_ms` and what was known for `key`; the newest known."""
        newest = max(issued_at_ms, self._memo.get(key, issued_at_ms))
        if self._memo_size <= 0:
            return newest
        self._memo[key] = newest
        self._memo.move_to_end(key)
        while len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)
        return newest

    # ------------------------------------------------------------------ the store

    def _inserter(self, period: int) -> Batcher[Document, None]:
        batcher = self._inserters.get(period)
        if batcher is None:
            collection = self.buckets.collection(period)
            settings = self._batching
            batcher = self._inserters[period] = Batcher(
                lambda docs: insert_each(collection, docs),
                max_batch=settings.max_batch,
                max_delay_s=settings.insert_delay_s,
                max_in_flight=settings.inserts_in_flight,
            )
        return batcher

    def _reader(self, period: int) -> Batcher[str, int | None]:
        batcher = self._readers.get(period)
        if batcher is None:
            collection = self.buckets.collection(period)

            async def newest(keys: list[str]) -> list[int | None]:
                found = await collection.find({"key": {"$in": sorted(set(keys))}}, _PROJECTION).to_list()
                by_key: dict[str, int] = {}
                for doc in found:
                    key, issued_at_ms = doc["key"], doc["issued_at_ms"]
                    by_key[key] = max(issued_at_ms, by_key.get(key, issued_at_ms))
                return [by_key.get(key) for key in keys]

            settings = self._batching
            batcher = self._readers[period] = Batcher(
                newest,
                max_batch=settings.max_batch,
                max_delay_s=settings.read_delay_s,
                max_in_flight=settings.reads_in_flight,
            )
        return batcher

    async def _enter(self, now: datetime) -> int:
        """The period of `now`; when a new day begins, prepare its bucket and drop expired ones."""
        period = self.buckets.period(now)
        if self._latest is not None and period <= self._latest:
            return period
        async with self._rotating:
            if self._latest is None or period > self._latest:
                first = self._latest is None
                await self._ensure(period)
                self._latest = period
                if not first:
                    await self._expire(period)
        return period

    async def _ensure(self, period: int) -> None:
        if self._index_key:
            # Real MongoDB serves the reads from it; FerretDB v1 uses no index for queries.
            await guard_store(functools.partial(self.buckets.collection(period).create_index, "key"))

    async def _expire(self, period: int) -> list[str]:
        # Never by a clock ahead of this machine's: a `now` far in the future must not
        # drop the buckets that are still in use.
        oldest_kept = min(period, self.buckets.period(self._clock())) - _KEEP + 1
        for old in [p for p in (*self._inserters, *self._readers) if p < oldest_kept]:
            self._inserters.pop(old, None)
            self._readers.pop(old, None)
        dropped = await guard_store(functools.partial(self.buckets.drop_before, oldest_kept))
        if dropped:
            log.info("dropped expired buckets %s", ", ".join(dropped))
        return dropped
