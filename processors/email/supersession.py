"""Newer codes win: which codes were sent, so that an older one coming up later is dropped.

A `SEND_OTP` job for a recipient and a purpose supersedes the older ones not yet sent.
"Older" is by issue time: the Kafka timestamp of the job's first publish, in epoch ms,
carried through retries; only a strictly newer code supersedes. After sending a code the
worker calls `record_sent`; before sending one it asks `newer_sent`, and drops the job as
`superseded` if the answer is yes.

**Storage: inserts only, in hourly buckets by issue time.** One document per code sent:
`_id` `<key>:<issued_at_ms>:<job_id>`, `key` and `issued_at_ms`; `key` is `code_key(recipient,
purpose)`, a hash. Neither the code nor the address is stored. A redelivered job's second
record collides on `_id`, which is fine. A record goes into the bucket (`processors.buckets`,
`bucket_s` long, an hour by default) holding its code's **issue time**, not its send time.
So a code newer than the one asked about is in the bucket of the asked code's issue time or
a later one, up to the bucket of `now` (and one more, for producers whose clocks run ahead):
`newer_sent` reads only those: two for a first delivery, issued moments ago; more for a retry
of a code issued hours ago. A code lives at most a day (`expires_in_minutes <= 1440`), so a
read spans at most a day and two buckets (hourly: the 24 before now's, now's and the next).
As many buckets are kept, up to now's (26 h): one below the oldest a read reaches, for
workers whose clocks lag. Older ones are dropped; a code issued before them has expired, and
is not recorded.

**Reads scan.** FerretDB v1 serves no query from an index (on SQLite only an `_id`
equality is filtered before decoding), so `find({"key": {"$in": [...]}})` costs a scan of
each bucket whatever the number of keys. Concurrent `newer_sent` calls are therefore
coalesced by a `Batcher` into one such `find` per bucket; the scans' cost, not the number
of keys, sets the rate (see `benchmarks/supersession_shape.py`). An in-process memo (key ->
the newest issue time this process recorded or read) answers "yes" without a read; a "no"
is only ever answered by the store, since another process may have sent a newer code since.
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
from processors.buckets import Rotation, TimeBuckets
from processors.claims import BatchSettings
from processors.store import Document, guard_store, insert_each

log = logging.getLogger(__name__)

MAX_LIFE_S = 86_400
"""The longest a code lives (`expires_in_minutes <= 1440`)."""
HOUR_S = 3_600
_KEY_HEX_CHARS = 32
_PROJECTION = {"_id": 0, "key": 1, "issued_at_ms": 1}


def code_key(recipient: str, purpose: str) -> str:
    """The key of a recipient's codes for `purpose`: the same for every spelling of the address's case."""
    digest = hashlib.sha256(f"{recipient.strip().lower()}\0{purpose}".encode())
    return digest.hexdigest()[:_KEY_HEX_CHARS]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LatestCodes:
    """The codes sent, by `code_key`, in the buckets `<prefix>_<YYYYMMDD>T<HHMMSS>` of
    `database`, one per `bucket_s` of issue time.

    `clock` is this machine's time; it only keeps a `now` far ahead from dropping buckets
    still in use.
    """

    def __init__(
        self,
        database: AsyncDatabase[Document],
        prefix: str = "email_codes",
        *,
        bucket_s: int = HOUR_S,
        memo_size: int = 20_000,
        batching: BatchSettings | None = None,
        index_key: bool = True,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.buckets = TimeBuckets(database, prefix, bucket_s=bucket_s)
        # Read: from the bucket of the asked code's issue time to the one after now's, at
        # most a code's life and two buckets. Kept: as many, up to now's bucket, so one more
        # below the oldest read, for workers whose clocks lag.
        self._window = -(-MAX_LIFE_S // bucket_s) + 2
        self._bucket_ms = bucket_s * 1000
        self._batching = batching or BatchSettings()
        self._index_key = index_key
        self._clock = clock
        self._memo: OrderedDict[str, int] = OrderedDict()
        self._memo_size = memo_size
        self._inserters: dict[int, Batcher[Document, None]] = {}
        self._readers: dict[int, Batcher[str, int | None]] = {}
        self._ensured: set[int] = set()
        self._rotation = Rotation(self.buckets, ensure=self._ensure, expire=self._expire)
        self.memo_answers = 0
        """`newer_sent` calls answered from the memo."""
        self.store_answers = 0
        """`newer_sent` calls answered by reading the store."""

    async def record_sent(self, key: str, issued_at_ms: int, job_id: str, now: datetime) -> None:
        """Record that the code of `job_id` for `key`, issued at `issued_at_ms`, was sent at `now`.

        Recording it again (a redelivered job) is fine. A code issued before the buckets
        kept has expired: no read would reach its record, so none is written. Raises
        `TransientError` when the store is unreachable; the code was sent all the same, and
        this process remembers it.
        """
        self._remember(key, issued_at_ms)
        current = await self._enter(now)
        period = self._issue_period(issued_at_ms)
        if period < current - self._window + 1:
            return
        if period not in self._ensured:
            async with self._rotation.lock:
                await self._ensure(period)
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
        await self._enter(now)
        found = await asyncio.gather(
            *(
                guard_store(functools.partial(self._reader(p).submit, key))
                for p in self._read_periods(issued_at_ms, now)
            )
        )
        self.store_answers += 1
        newest = max((f for f in found if f is not None), default=None)
        if newest is None:
            return False
        return self._remember(key, newest) > issued_at_ms

    async def prepare(self, now: datetime) -> list[str]:
        """Create the bucket of `now` (and its `key` index) and drop expired ones; the names
        of the buckets dropped. The worker calls it at start; the calls above do the same on
        their own when a new bucket begins."""
        return await self._rotation.prepare(now)

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

    def _issue_period(self, issued_at_ms: int) -> int:
        return issued_at_ms // self._bucket_ms

    def _read_periods(self, issued_at_ms: int, now: datetime) -> range:
        """The buckets `newer_sent(key, issued_at_ms, now)` reads, oldest first."""
        issued = self._issue_period(issued_at_ms)
        last = max(self.buckets.period(now) + 1, issued)
        return range(max(issued, last - self._window + 1), last + 1)

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
        """The period of `now`; when a new bucket begins, prepare it and drop expired ones."""
        return await self._rotation.enter(now)

    async def _ensure(self, period: int) -> None:
        """Create the bucket's `key` index, once per bucket and process (under the rotation lock)."""
        if period in self._ensured:
            return
        if self._index_key:
            # Real MongoDB serves the reads from it; FerretDB v1 uses no index for queries.
            await guard_store(functools.partial(self.buckets.collection(period).create_index, "key"))
        self._ensured.add(period)

    async def _expire(self, period: int) -> list[str]:
        # Never by a clock ahead of this machine's: a `now` far in the future must not
        # drop the buckets that are still in use.
        oldest_kept = min(period, self.buckets.period(self._clock())) - self._window + 1
        for old in [p for p in (*self._inserters, *self._readers, *self._ensured) if p < oldest_kept]:
            self._inserters.pop(old, None)
            self._readers.pop(old, None)
            self._ensured.discard(old)
        dropped = await guard_store(functools.partial(self.buckets.drop_before, oldest_kept))
        if dropped:
            log.info("dropped expired buckets %s", ", ".join(dropped))
        return dropped
