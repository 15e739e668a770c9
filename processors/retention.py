"""Purging old documents on a timer, since the store has no TTL indexes (FerretDB v1).

`Purger(tasks, retention=...)` runs each task once at `start()`, then every `interval_s`
(an hour by default), with the cut-off `clock() - retention`: a task deletes what is older
and says how many documents it deleted. A store error is logged and the task tried again
next round; it never stops the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

log = logging.getLogger(__name__)

PurgeTask = Callable[[datetime], Awaitable[int]]
"""Deletes the documents older than the cut-off it is given; returns how many."""

DEFAULT_INTERVAL_S = 3600.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


def task_name(task: PurgeTask) -> str:
    """`AdStore.purge` for a bound method; what logs call the task."""
    return getattr(task, "__qualname__", None) or repr(task)


class Purger:
    def __init__(
        self,
        tasks: Sequence[PurgeTask],
        *,
        retention: timedelta,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if retention <= timedelta(0) or interval_s <= 0:
            raise ValueError("retention and interval_s must be positive")
        self._tasks = tuple(tasks)
        self._retention = retention
        self._interval_s = interval_s
        self._clock = clock
        self._runner: asyncio.Task[None] | None = None
        self.rounds = 0
        """Rounds finished (tests wait on it)."""

    def start(self) -> None:
        """Run the tasks now, in the background, and every `interval_s` after."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="purger")

    async def close(self) -> None:
        """Stop; a round in progress is cut off (its deletes are each all-or-nothing per document)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def run_once(self) -> dict[str, int | None]:
        """One round: documents deleted by each task, None for a task that failed."""
        older_than = self._clock() - self._retention
        purged: dict[str, int | None] = {}
        for task in self._tasks:
            name = task_name(task)
            try:
                purged[name] = count = await task(older_than)
            except Exception as error:
                # The class only: a driver's message may quote the store URL.
                log.warning("purge %s failed: %s; trying again next round", name, type(error).__name__)
                purged[name] = None
                continue
            log.log(
                logging.INFO if count else logging.DEBUG,
                "purge %s: %d documents older than %s deleted",
                name,
                count,
                older_than.isoformat(timespec="minutes"),
            )
        self.rounds += 1
        return purged

    async def _run(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(self._interval_s)
