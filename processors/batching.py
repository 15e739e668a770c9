"""Coalescing concurrent store calls into bulk calls.

Jobs run concurrently and each awaits its own store call (`ledger.claim(...)`). A
`Batcher` gathers the calls that arrive within `max_delay_s` of the first one (or until
`max_batch` are waiting) and makes one bulk call for all of them, such as one
`insert_many(ordered=False)` for 64 claims. Every caller gets back its own result or its
own error: one duplicate key in an unordered insert fails only the caller whose document
it was.

No waves: a caller waits for the linger (a few ms), for a free slot (at most
`max_in_flight` bulk calls run at once, so the next batch does not wait for a slow one
unless all slots are taken), and for the round trip of its own batch; never for the
other jobs' work. While every slot is busy, new calls keep joining the open batch, so
batches grow with the load instead of queueing up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Waiter(Generic[T, R]):
    """One caller's item and the future it awaits (compared by identity, not by value)."""

    __slots__ = ("future", "item")

    def __init__(self, item: T, future: asyncio.Future[R]) -> None:
        self.item = item
        self.future = future


class Batcher(Generic[T, R]):
    """Gathers concurrent `submit(item)` calls into calls of `bulk(items)`.

    `bulk` returns one entry per item, in order: the item's result, or an exception to
    raise to that item's caller alone. If `bulk` itself raises, every caller of that
    batch gets the error.
    """

    def __init__(
        self,
        bulk: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_batch: int = 256,
        max_delay_s: float = 0.002,
        max_in_flight: int = 2,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1 or max_delay_s < 0:
            raise ValueError("max_batch and max_in_flight must be >= 1, max_delay_s >= 0")
        self._bulk = bulk
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._max_in_flight = max_in_flight
        self._pending: list[_Waiter[T, R]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._due = False  # the oldest pending call has lingered long enough
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        """The result of `item` from the bulk call it joins; its error, if it has one."""
        loop = asyncio.get_running_loop()
        waiter: _Waiter[T, R] = _Waiter(item, loop.create_future())
        self._pending.append(waiter)
        if not self._due and self._timer is None:
            self._timer = loop.call_later(self._max_delay_s, self._on_timer)
        self._dispatch()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            # Not sent yet: leave the batch. Already sent: the write happens regardless.
            with contextlib.suppress(ValueError):
                self._pending.remove(waiter)
            raise

    async def aclose(self) -> None:
        """Wait until every call submitted so far has had its bulk call."""
        while self._pending or self._tasks:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            else:
                await asyncio.sleep(self._max_delay_s)

    def _on_timer(self) -> None:
        self._timer = None
        self._due = True
        self._dispatch()

    def _dispatch(self) -> None:
        while (
            self._pending
            and self._in_flight < self._max_in_flight
            and (self._due or len(self._pending) >= self._max_batch)
        ):
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not self._pending:
            self._due = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    async def _run(self, batch: list[_Waiter[T, R]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            try:
                results = await self._bulk([waiter.item for waiter in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"bulk call answered {len(results)} results for {len(batch)} items")
            except asyncio.CancelledError:
                for waiter in batch:
                    waiter.future.cancel()
                raise
            except Exception as error:
                for waiter in batch:
                    if not waiter.future.done():
                        waiter.future.set_exception(error)
                return
            for waiter, result in zip(batch, results, strict=True):
                if waiter.future.done():  # its caller was cancelled
                    continue
                if isinstance(result, BaseException):
                    waiter.future.set_exception(result)
                else:
                    waiter.future.set_result(result)
        finally:
            self._in_flight -= 1
            self._dispatch()
