"""Collections bucketed by time, so that old data goes by dropping whole collections.

A bucket holds what was written during one period of `bucket_s` seconds, in the
collection `<prefix>_<YYYYMMDD>` (periods of a day) or `<prefix>_<YYYYMMDD>T<HHMMSS>`
(shorter periods, which must divide a day). Periods are numbered from the Unix epoch,
so every worker names the same bucket the same way.

Dropping a collection is how data expires: FerretDB v1 has no TTL indexes, and
deleting documents costs a scan of the collection.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from processors.store import Document, aware

DAY_S = 86_400


class TimeBuckets:
    def __init__(self, database: AsyncDatabase[Document], prefix: str, *, bucket_s: int = DAY_S) -> None:
        if bucket_s < 1 or DAY_S % bucket_s:
            raise ValueError(f"bucket_s must divide a day evenly, not {bucket_s}")
        self.database = database
        self.prefix = prefix
        self.bucket_s = bucket_s
        self._pattern = re.compile(rf"^{re.escape(prefix)}_(\d{{8}})(?:T(\d{{6}}))?$")

    def period(self, now: datetime) -> int:
        return int(aware(now).timestamp() // self.bucket_s)

    def name(self, period: int) -> str:
        start = datetime.fromtimestamp(period * self.bucket_s, UTC)
        stamp = f"{start:%Y%m%d}" if self.bucket_s == DAY_S else f"{start:%Y%m%dT%H%M%S}"
        return f"{self.prefix}_{stamp}"

    def collection(self, period: int) -> AsyncCollection[Document]:
        return self.database[self.name(period)]

    def parse(self, name: str) -> int | None:
        """The period of the bucket called `name`, or None if it is not one of these buckets."""
        match = self._pattern.match(name)
        if match is None:
            return None
        day, time = match.groups()
        if (time is None) != (self.bucket_s == DAY_S):
            return None
        try:
            start = datetime.strptime(day + (time or "000000"), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        except ValueError:
            return None
        period, offset = divmod(int(start.timestamp()), self.bucket_s)
        return None if offset else period

    async def existing(self) -> list[int]:
        """The periods whose buckets exist, oldest first."""
        names = await self.database.list_collection_names()
        return sorted(p for p in map(self.parse, names) if p is not None)

    async def drop_before(self, period: int) -> list[str]:
        """Drop every bucket older than `period`; the names dropped."""
        dropped = [self.name(p) for p in await self.existing() if p < period]
        for name in dropped:
            await self.database.drop_collection(name)
        return dropped


class Rotation:
    """When a new period begins, prepare its bucket once per process, then drop old ones.

    `ensure(period)` readies a bucket (say, its indexes); `expire(period)` drops what is
    too old once `period` is current, and returns the names dropped. Both run under
    `lock`, which callers may take for their own bucket work too.
    """

    def __init__(
        self,
        buckets: TimeBuckets,
        *,
        ensure: Callable[[int], Awaitable[None]],
        expire: Callable[[int], Awaitable[list[str]]],
    ) -> None:
        self._buckets = buckets
        self._ensure = ensure
        self._expire = expire
        self.latest: int | None = None
        """The latest period entered or prepared."""
        self.lock = asyncio.Lock()

    async def prepare(self, now: datetime) -> list[str]:
        """Ready the bucket of `now` and drop expired ones (at start); the names dropped."""
        period = self._buckets.period(now)
        async with self.lock:
            await self._ensure(period)
            self.latest = max(period, self.latest or period)
            return await self._expire(self.latest)

    async def enter(self, now: datetime) -> int:
        """The period of `now`; the first call in a new period readies its bucket, and
        (unless it is this process's first) drops the expired ones."""
        period = self._buckets.period(now)
        if self.latest is not None and period <= self.latest:
            return period
        async with self.lock:
            if self.latest is None or period > self.latest:
                first = self.latest is None
                await self._ensure(period)
                self.latest = period
                if not first:
                    await self._expire(period)
        return period
