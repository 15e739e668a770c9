"""The suppression list: addresses that get no more email (hard bounces, complaints, by hand).

One small collection, `email_suppressions`, one document per address: `_id` is the
normalized address (the bare address, stripped and lower-cased), with `reason`
(`bounced`, `complained` or `manual`), `source` (the Resend event id, or `cli`) and
`created_at`.

`is_suppressed` is asked once per email sent, hundreds of times a second, and a read on
FerretDB scans its collection: so it never reads the store. It answers from an in-memory
set of the addresses, re-read whole (one `find`) at most every `refresh_s`, so another
worker's addition shows here within `refresh_s`; this worker's own `add` and `remove`
change the set at once.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from processors.errors import JobError
from processors.store import Document, aware, guard_store

log = logging.getLogger(__name__)

COLLECTION = "email_suppressions"
CLI_SOURCE = "cli"

_NAMED_ADDRESS = re.compile(r"[^<>]*<\s*([^<>]+?)\s*>\s*")


class SuppressionReason(enum.StrEnum):
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    MANUAL = "manual"


@dataclass(frozen=True)
class Suppression:
    address: str
    reason: SuppressionReason
    source: str
    created_at: datetime


def normalize_address(address: str) -> str:
    """`" Ada <Ada@Example.com> "` -> `ada@example.com`: the key of an address."""
    named = _NAMED_ADDRESS.fullmatch(address)
    bare = named.group(1) if named else address
    return bare.strip().lower()


class Suppressions:
    """The suppression list in `collection`; `clock_s` is a monotonic clock in seconds."""

    def __init__(
        self,
        collection: AsyncCollection[Document],
        *,
        refresh_s: float,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        if not refresh_s > 0:
            raise ValueError(f"refresh_s must be positive, not {refresh_s}")
        self._collection = collection
        self._refresh_s = refresh_s
        self._clock_s = clock_s
        self._addresses: set[str] = set()
        self._loaded = False
        self._next_read_s = 0.0
        self._refreshing: asyncio.Task[None] | None = None
        # This worker's changes while a refresh reads: applied over what it read.
        self._changed_during_refresh: dict[str, bool] | None = None
        self.reads = 0
        """How many times the whole list was read from the store."""

    async def is_suppressed(self, address: str) -> bool:
        """Whether `address` is on the list, as of at most `refresh_s` ago (this worker's
        own changes at once). Reads the store only when the list is due for a refresh.

        Raises `TransientError` only when the list was never read and the store is
        unavailable; later, a failed refresh keeps the list it had.
        """
        if not self._loaded or self._clock_s() >= self._next_read_s:
            await self._refresh_shared(keep_on_failure=self._loaded)
        return normalize_address(address) in self._addresses

    async def refresh(self) -> None:
        """Read the whole list now. Raises `TransientError` if the store is unavailable."""
        await self._refresh_shared(keep_on_failure=False)

    async def add(self, address: str, *, reason: SuppressionReason | str, source: str, now: datetime) -> bool:
        """Put `address` on the list; True if it was not on it. An address already on it
        keeps its first reason and source."""
        key = _key(address)
        document: Document = {
            "_id": key,
            "reason": SuppressionReason(reason).value,
            "source": source,
            "created_at": now,
        }
        try:
            await guard_store(functools.partial(self._collection.insert_one, document))
        except DuplicateKeyError:
            new = False
        else:
            new = True
        self._note(key, suppressed=True)
        return new

    async def remove(self, address: str) -> bool:
        """Take `address` off the list; True if it was on it."""
        key = _key(address)
        result = await guard_store(functools.partial(self._collection.delete_one, {"_id": key}))
        self._note(key, suppressed=False)
        return result.deleted_count > 0

    async def entries(self) -> list[Suppression]:
        """Every suppression, oldest first (operators: it reads the whole collection)."""
        documents = await guard_store(lambda: self._collection.find({}).to_list())
        entries = [
            Suppression(
                address=doc["_id"],
                reason=SuppressionReason(doc["reason"]),
                source=doc["source"],
                created_at=aware(doc["created_at"]),
            )
            for doc in documents
        ]
        return sorted(entries, key=lambda entry: (entry.created_at, entry.address))

    # ------------------------------------------------------------------ the set

    def _note(self, key: str, *, suppressed: bool) -> None:
        if suppressed:
            self._addresses.add(key)
        else:
            self._addresses.discard(key)
        if self._changed_during_refresh is not None:
            self._changed_during_refresh[key] = suppressed

    async def _refresh_shared(self, *, keep_on_failure: bool) -> None:
        """One read at a time: concurrent callers wait for the read in progress."""
        if self._refreshing is None:
            self._refreshing = asyncio.create_task(self._read())
            self._refreshing.add_done_callback(self._refresh_done)
        try:
            await asyncio.shield(self._refreshing)
        except Exception:
            if not keep_on_failure:
                raise

    def _refresh_done(self, task: asyncio.Task[None]) -> None:
        self._refreshing = None
        # After a failure too: a store outage must not turn every send into a read.
        self._next_read_s = self._clock_s() + self._refresh_s
        error = None if task.cancelled() else task.exception()  # retrieved, waited for or not
        if error is not None and self._loaded:
            reason = error.message if isinstance(error, JobError) else type(error).__name__
            log.warning("could not refresh the suppression list (%s); keeping the one read before", reason)

    async def _read(self) -> None:
        self._changed_during_refresh = {}
        try:
            documents = await guard_store(lambda: self._collection.find({}, {"_id": 1}).to_list())
            addresses = {doc["_id"] for doc in documents}
            for key, suppressed in self._changed_during_refresh.items():
                (addresses.add if suppressed else addresses.discard)(key)
            self._addresses = addresses
            self._loaded = True
            self.reads += 1
        finally:
            self._changed_during_refresh = None


def _key(address: str) -> str:
    key = normalize_address(address)
    if not key or "@" not in key:
        raise ValueError("not an email address")
    return key
