"""Store helpers shared by the ledger and the ads store: failure mapping and stored datetimes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pymongo.errors import ConnectionFailure, PyMongoError

from processors.errors import TransientError

T = TypeVar("T")

Document = dict[str, Any]


async def guard_store(action: Callable[[], Awaitable[T]]) -> T:
    """Run one store call; an unreachable or timed-out store is a `TransientError`.

    Other errors (a duplicate key, a bad query) propagate unchanged: the caller decides.
    """
    try:
        return await action()
    except PyMongoError as error:
        # ConnectionFailure covers ServerSelectionTimeoutError, NetworkTimeout and AutoReconnect.
        if isinstance(error, ConnectionFailure) or error.timeout:
            raise TransientError(
                f"store unavailable: {type(error).__name__}", error_class="StoreUnavailable"
            ) from error
        raise


def aware(value: datetime) -> datetime:
    """A stored datetime as UTC-aware: PyMongo returns naive UTC unless the client is tz_aware."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
