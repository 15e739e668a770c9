"""What is due now: the retry scheduler's in-memory timer heap, with no Kafka in it.

Records wait here until their due time; `due(now_ms)` hands out those whose time has
come, earliest first. The buffer counts records and bytes, so the scheduler can pause
its consumer when it is full.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Collection
from dataclasses import dataclass, field

from streams.retry.record import RawRecord

MAX_POLL_WAIT_MS = 500


@dataclass(order=True)
class Pending:
    due_at_ms: int
    seq: int
    record: RawRecord = field(compare=False)


class RetryBuffer:
    def __init__(self, *, max_records: int, max_bytes: int) -> None:
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._heap: list[Pending] = []
        self._seq = itertools.count()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def full(self) -> bool:
        return len(self._heap) >= self._max_records or self.bytes >= self._max_bytes

    def add(self, record: RawRecord, due_at_ms: int) -> None:
        heapq.heappush(self._heap, Pending(due_at_ms, next(self._seq), record))
        self.bytes += len(record.value)

    def due(self, now_ms: int) -> list[Pending]:
        """Remove and return every record due at `now_ms`, earliest first."""
        out: list[Pending] = []
        while self._heap and self._heap[0].due_at_ms <= now_ms:
            pending = heapq.heappop(self._heap)
            self.bytes -= len(pending.record.value)
            out.append(pending)
        return out

    def put_back(self, pending: Pending, due_at_ms: int) -> None:
        """A record whose redelivery failed waits again, until `due_at_ms`."""
        self.add(pending.record, due_at_ms)

    def wait_ms(self, now_ms: int) -> int:
        """How long the scheduler may wait for new records before the next one is due."""
        if not self._heap:
            return MAX_POLL_WAIT_MS
        return max(0, min(MAX_POLL_WAIT_MS, self._heap[0].due_at_ms - now_ms))

    def drop(self, partitions: Collection[tuple[str, int]]) -> int:
        """Forget the records of revoked partitions (their new owner reads them again)."""
        kept = [p for p in self._heap if (p.record.topic, p.record.partition) not in partitions]
        dropped = len(self._heap) - len(kept)
        heapq.heapify(kept)
        self._heap = kept
        self.bytes = sum(len(p.record.value) for p in kept)
        return dropped
