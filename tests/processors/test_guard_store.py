"""`guard_store`: store failures become `TransientError`, and no cancellation reaches the store call.

A cancelled driver call can break the driver for good (see `processors.store.guard_store`),
so the caller's cancellation must stop the caller only. The real driver's case is in
tests/integration/test_store_outage.py.
"""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
from pymongo.errors import AutoReconnect, DuplicateKeyError

from processors.errors import TransientError
from processors.store import guard_store
from tests.polling import eventually


class StoreCall:
    """A store call that waits until the test lets it end, and records how it ended."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.ended: str | None = None

    async def __call__(self) -> str:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.ended = "cancelled"
            raise
        self.ended = "failed" if self.error else "done"
        if self.error:
            raise self.error
        return "stored"


async def test_a_store_error_of_the_connection_is_transient_and_others_pass_unchanged() -> None:
    down, duplicate = StoreCall(AutoReconnect("connection closed")), StoreCall(DuplicateKeyError("taken"))
    down.release.set()
    duplicate.release.set()

    with pytest.raises(TransientError) as raised:
        await guard_store(down)
    assert raised.value.error_class == "StoreUnavailable"
    with pytest.raises(DuplicateKeyError):
        await guard_store(duplicate)


async def test_a_cancelled_caller_stops_waiting_but_the_store_call_runs_to_its_end() -> None:
    call = StoreCall()
    caller = asyncio.create_task(guard_store(call))
    await asyncio.wait_for(call.started.wait(), 2)

    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, 1)  # at once: the caller does not wait for the call

    assert call.ended is None  # the cancellation did not reach it
    call.release.set()
    await eventually(lambda: call.ended, timeout_s=2, what="the store call to end")
    assert call.ended == "done"


async def test_the_error_of_a_call_nobody_waits_for_is_retrieved(caplog: pytest.LogCaptureFixture) -> None:
    call = StoreCall(AutoReconnect("connection closed"))
    caller = asyncio.create_task(guard_store(call))
    await asyncio.wait_for(call.started.wait(), 2)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        call.release.set()
        await eventually(lambda: call.ended, timeout_s=2, what="the store call to fail")
        await asyncio.sleep(0)  # its done callbacks run
        gc.collect()  # an unretrieved error is reported when its task is collected

    assert "never retrieved" not in caplog.text
