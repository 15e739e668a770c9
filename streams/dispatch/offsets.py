"""Which offset each partition may commit when jobs finish out of order.

A partition's committable offset is the lowest offset read and not finished (it must be
read again after a crash), or one past the highest offset read when every one is
finished. Only that one number is committed: no per-record metadata, so nothing grows
with the gaps (Parallel Consumer's offset map can outgrow the commit metadata limit).
The cost is that a crash repeats the records finished above the watermark, which
`max_uncommitted_records` bounds.

Pure bookkeeping, no I/O. The dispatcher and the retry scheduler both commit with it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class PartitionOffsets:
    """One partition of one assignment. Offsets must be read in increasing order."""

    __slots__ = ("_done", "_next_offset", "_open", "committed")

    def __init__(self) -> None:
        self._open: deque[int] = deque()  # read and not yet below the watermark, ascending
        self._done: set[int] = set()  # finished offsets still in `_open`
        self._next_offset: int | None = None
        self.committed: int | None = None  # last offset committed for this assignment

    def read(self, offset: int) -> bool:
        """Record that `offset` was read. False for an offset at or below one read before."""
        if self._next_offset is not None and offset < self._next_offset:
            return False
        self._open.append(offset)
        self._next_offset = offset + 1
        return True

    def finish(self, offset: int) -> None:
        if self._next_offset is None or offset >= self._next_offset:
            raise ValueError(f"offset {offset} finished but never read")
        if not self._open or offset < self._open[0]:
            return  # already below the watermark
        self._done.add(offset)
        while self._open and self._open[0] in self._done:
            self._done.discard(self._open.popleft())

    @property
    def open(self) -> int:
        """Offsets read and not yet below the watermark: what a crash would read again."""
        return len(self._open)

    @property
    def unfinished(self) -> int:
        return len(self._open) - len(self._done)

    def committable(self) -> int | None:
        """The offset to commit (the next one to read after a restart), if any was read."""
        if self._open:
            return self._open[0]
        return self._next_offset

    def due(self) -> int | None:
        """The committable offset, if it differs from the last one committed."""
        offset = self.committable()
        return None if offset is None or offset == self.committed else offset


class OffsetTracker(Generic[P]):
    """`PartitionOffsets` of every partition of the current assignment."""

    def __init__(self) -> None:
        self._partitions: dict[P, PartitionOffsets] = {}

    def partition(self, partition: P) -> PartitionOffsets:
        """The partition's offsets, started on first use."""
        offsets = self._partitions.get(partition)
        if offsets is None:
            offsets = self._partitions[partition] = PartitionOffsets()
        return offsets

    @property
    def open(self) -> int:
        return sum(offsets.open for offsets in self._partitions.values())

    def commit_plan(self, only: Collection[P] | None = None) -> dict[P, int]:
        """Offsets to commit now: each partition whose watermark moved since its last commit."""
        plan: dict[P, int] = {}
        for partition, offsets in self._partitions.items():
            if only is not None and partition not in only:
                continue
            offset = offsets.due()
            if offset is not None:
                plan[partition] = offset
        return plan

    def committed(self, offsets: Mapping[P, int]) -> None:
        for partition, offset in offsets.items():
            tracked = self._partitions.get(partition)
            if tracked is not None:
                tracked.committed = offset

    def forget(self, partitions: Iterable[P]) -> None:
        for partition in partitions:
            self._partitions.pop(partition, None)
