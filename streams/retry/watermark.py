"""Commit offsets for jobs that finish out of order.

A partition's committable offset is the lowest offset still in flight (it must be
read again after a crash), or one past the highest offset seen when none is.
"""

from __future__ import annotations

from collections import deque


class PartitionWatermark:
    def __init__(self) -> None:
        self._in_flight: deque[int] = deque()
        self._done: set[int] = set()
        self._next_offset: int | None = None

    def started(self, offset: int) -> None:
        """Record that `offset` was read; offsets of one partition arrive in order."""
        if self._next_offset is not None and offset < self._next_offset:
            raise ValueError(f"offset {offset} arrived after {self._next_offset - 1}")
        self._in_flight.append(offset)
        self._next_offset = offset + 1

    def finished(self, offset: int) -> None:
        self._done.add(offset)
        while self._in_flight and self._in_flight[0] in self._done:
            self._done.discard(self._in_flight.popleft())

    @property
    def in_flight(self) -> int:
        return len(self._in_flight) - len(self._done)

    def committable(self) -> int | None:
        """The offset to commit (the next one to read after a restart), if any."""
        if self._in_flight:
            return self._in_flight[0]
        return self._next_offset
