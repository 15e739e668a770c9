"""Store helpers shared by the ledger and the ads store: store calls that map failures and that no
cancellation reaches, stored datetimes and unordered bulk inserts with one result per document."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, ConnectionFailure, DuplicateKeyError, PyMongoError, WriteError

from processors.errors import TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")
V = TypeVar("V")

Document = dict[str, Any]


async def guard_store(action: Callable[[], Awaitable[T]]) -> T:
    """Run one store call; an unreachable or timed-out store is a `TransientError`.

    Other errors (a duplicate key, a bad query) propagate unchanged: the caller decides.

    The call runs in a task of its own, which the caller's cancellation (a revoked
    partition, a shutdown, a timeout around the caller) does not reach: the caller stops
    waiting at once, the call ends on its own within the client's timeouts, and a write it
    was making happens or not as if the caller had waited. A driver call must never be
    cancelled: on Python 3.11, cancelling an `AsyncMongoClient` call while it selects a
    server can leave the client's topology lock held for good (`asyncio.wait_for` gives up
    on the task it cancelled before that task took the lock back), and then every store
    call of the process waits forever.
    """
    call = asyncio.ensure_future(action())
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        call.add_done_callback(_outcome_dropped)
        raise
    except PyMongoError as error:
        # ConnectionFailure covers ServerSelectionTimeoutError, NetworkTimeout and AutoReconnect.
        if isinstance(error, ConnectionFailure) or error.timeout:
            raise TransientError(
                f"store unavailable: {type(error).__name__}", error_class="StoreUnavailable"
            ) from error
        raise


def _outcome_dropped(call: asyncio.Future[Any]) -> None:
    """The end of a call whose caller was cancelled: nobody waits for it, but it is retrieved."""
    if not call.cancelled() and (error := call.exception()) is not None:
        log.debug("a store call whose caller was cancelled failed: %s", type(error).__name__)


def aware(value: datetime) -> datetime:
    """A stored datetime as UTC-aware: PyMongo returns naive UTC unless the client is tz_aware."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


DUPLICATE_KEY_CODES = frozenset({11000, 11001, 12582})


async def insert_each(
    collection: AsyncCollection[Document], documents: list[Document]
) -> list[Exception | None]:
    """Insert `documents` with one unordered `insert_many`; per document, `None` or its own error.

    A document whose `_id` is taken gets a `DuplicateKeyError`, any other write error a
    `WriteError`; the other documents are inserted all the same. An error of the whole
    call (the store unreachable) is raised.
    """
    try:
        await collection.insert_many(documents, ordered=False)
    except BulkWriteError as error:
        results: list[Exception | None] = [None] * len(documents)
        for write_error in error.details.get("writeErrors", []):
            code = write_error.get("code")
            kind = DuplicateKeyError if code in DUPLICATE_KEY_CODES else WriteError
            results[write_error["index"]] = kind(write_error.get("errmsg", "write error"), code, write_error)
        return results
    return [None] * len(documents)


def as_stored(value: V) -> V:
    """`value` as the store will give it back: datetimes cut to milliseconds (BSON's precision),
    in nested documents and lists too. Keep documents this way in memory, and what a worker
    remembers equals what it reads."""
    stored: Any = value
    if isinstance(value, datetime):
        stored = value.replace(microsecond=value.microsecond // 1000 * 1000)
    elif isinstance(value, dict):
        stored = {key: as_stored(item) for key, item in value.items()}
    elif isinstance(value, list):
        stored = [as_stored(item) for item in value]
    return cast(V, stored)
