"""The batcher: concurrent calls share bulk calls, each gets its own answer, and no call
waits for anything but its own batch's round trip."""

from __future__ import annotations

import asyncio

import pytest

from processors.batching import Batcher
from tests.polling import eventually


class Bulk:
    """A bulk call that records its batches; `hold` keeps the next calls open until set."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.hold: asyncio.Event | None = None
        self.running = 0

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.running += 1
        try:
            if self.hold is not None:
                await self.hold.wait()
            return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]
        finally:
            self.running -= 1


async def test_concurrent_calls_share_one_bulk_call_and_each_gets_its_own_result() -> None:
    bulk = Bulk()
    batcher: Batcher[int, int] = Batcher(bulk, max_batch=100, max_delay_s=0.01)
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(10)), return_exceptions=True)
    assert bulk.batches == [list(range(10))]
    for i, outcome in enumerate(outcomes):
        if i % 2:
            assert isinstance(outcome, ValueError)
            assert str(outcome) == f"odd {i}"
        else:
            assert outcome == i * 10


async def test_a_full_batch_goes_at_once_and_the_rest_follows() -> None:
    bulk = Bulk()
    batcher: Batcher[int, int] = Batcher(bulk, max_batch=4, max_delay_s=60, max_in_flight=4)
    # A linger of a minute: only the size limit can send the first batches in time.
    first = [asyncio.ensure_future(batcher.submit(i)) for i in range(8)]
    await eventually(lambda: len(bulk.batches) == 2, timeout_s=5, what="two full batches")
    assert await asyncio.gather(*first[::2]) == [0, 20, 40, 60]
    assert bulk.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]


async def test_an_error_of_the_whole_bulk_call_reaches_every_caller_of_that_batch() -> None:
    async def broken(items: list[int]) -> list[int | BaseException]:
        raise ConnectionError("store unreachable")

    batcher: Batcher[int, int] = Batcher(broken, max_delay_s=0)
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes)


async def test_a_slow_bulk_call_does_not_hold_back_the_next_batch() -> None:
    bulk = Bulk()
    slow_gate = asyncio.Event()
    bulk.hold = slow_gate
    batcher: Batcher[int, int] = Batcher(bulk, max_delay_s=0, max_in_flight=2)
    slow = asyncio.ensure_future(batcher.submit(0))
    await eventually(lambda: bulk.running == 1, timeout_s=5, what="the first bulk call")
    bulk.hold = None  # the next bulk call answers at once
    assert await asyncio.wait_for(batcher.submit(2), timeout=5) == 20
    assert not slow.done()
    assert bulk.batches == [[0], [2]]
    slow_gate.set()
    assert await asyncio.wait_for(slow, timeout=5) == 0


async def test_while_every_slot_is_busy_new_calls_gather_into_one_batch() -> None:
    bulk = Bulk()
    gate = asyncio.Event()
    bulk.hold = gate
    batcher: Batcher[int, int] = Batcher(bulk, max_delay_s=0, max_in_flight=1)
    first = asyncio.ensure_future(batcher.submit(0))
    await eventually(lambda: bulk.running == 1, timeout_s=5, what="the first bulk call")
    waiting = [asyncio.ensure_future(batcher.submit(i)) for i in range(2, 12, 2)]
    await asyncio.sleep(0)
    assert len(bulk.batches) == 1  # the slot is taken: they wait together
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, *waiting), timeout=5) == [0, 20, 40, 60, 80, 100]
    assert bulk.batches == [[0], [2, 4, 6, 8, 10]]


async def test_a_cancelled_call_that_was_not_sent_leaves_its_batch() -> None:
    bulk = Bulk()
    batcher: Batcher[int, int] = Batcher(bulk, max_batch=100, max_delay_s=60)
    gone = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    kept = [asyncio.ensure_future(batcher.submit(i)) for i in (4, 6)]
    await asyncio.sleep(0)
    # 98 more make a full batch of 100: only the size limit sends it, before the minute of linger.
    more = [asyncio.ensure_future(batcher.submit(i)) for i in range(8, 8 + 2 * 98, 2)]
    assert await asyncio.wait_for(asyncio.gather(*kept, *more), timeout=5)
    assert bulk.batches[0][:2] == [4, 6]
    assert 2 not in [item for batch in bulk.batches for item in batch]


async def test_aclose_waits_for_the_calls_in_flight() -> None:
    bulk = Bulk()
    gate = asyncio.Event()
    bulk.hold = gate
    batcher: Batcher[int, int] = Batcher(bulk, max_delay_s=0)
    call = asyncio.ensure_future(batcher.submit(4))
    await eventually(lambda: bulk.running == 1, timeout_s=5, what="the bulk call")
    closing = asyncio.ensure_future(batcher.aclose())
    await asyncio.sleep(0)
    assert not closing.done()
    gate.set()
    await asyncio.wait_for(closing, timeout=5)
    assert call.result() == 40


def test_the_limits_must_make_sense() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(Bulk(), max_batch=0)
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(Bulk(), max_in_flight=0)
