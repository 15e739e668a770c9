"""Which buffered job may start now: per-key order, a concurrency cap, and the buffer's size.

Pure bookkeeping, no I/O and no clock. The rule is Confluent Parallel Consumer's KEY
ordering: jobs with the same key run one at a time, in the order they were offered, while
jobs with different keys run side by side up to `concurrency`. A job whose key is `None`
carries no order promise and waits only for capacity.

Jobs become startable in the order they become eligible (the head of an idle key, or an
unkeyed job), so a key with a long queue takes turns with the others instead of starving
them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True, eq=False)
class Job(Generic[T]):
    """One record to process. Identity, not value, tells two jobs apart."""

    partition: Hashable
    offset: int
    key: Hashable | None
    size_bytes: int
    payload: T


class KeyedScheduler(Generic[T]):
    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency
        self._waiting: dict[Hashable, deque[Job[T]]] = {}  # keyed jobs behind their key's current one
        self._ready: deque[Job[T]] = deque()  # may start as soon as there is capacity
        self._held: set[Hashable] = set()  # keys with a job running or in `_ready`
        self._running: set[Job[T]] = set()
        self._buffered_records = 0
        self._buffered_bytes = 0

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def buffered_records(self) -> int:
        """Jobs offered and not started."""
        return self._buffered_records

    @property
    def buffered_bytes(self) -> int:
        return self._buffered_bytes

    def offer(self, job: Job[T]) -> None:
        self._buffered_records += 1
        self._buffered_bytes += job.size_bytes
        if job.key is None:
            self._ready.append(job)
        elif job.key in self._held:
            self._waiting.setdefault(job.key, deque()).append(job)
        else:
            self._held.add(job.key)
            self._ready.append(job)

    def take(self) -> Job[T] | None:
        """The next job to start, now counted as running; None at capacity or with none eligible."""
        if len(self._running) >= self.concurrency or not self._ready:
            return None
        job = self._ready.popleft()
        self._buffered_records -= 1
        self._buffered_bytes -= job.size_bytes
        self._running.add(job)
        return job

    def finish(self, job: Job[T]) -> None:
        """A started job ended (done, or given up); its key's next job becomes eligible."""
        self._running.remove(job)
        if job.key is not None:
            self._release(job.key)

    def drop(self, partitions: Callable[[Hashable], bool] | None = None) -> list[Job[T]]:
        """Forget buffered jobs (of the partitions `partitions` accepts; all if None)."""

        def doomed(job: Job[T]) -> bool:
            return partitions is None or partitions(job.partition)

        dropped = [job for job in self._ready if doomed(job)]
        self._ready = deque(job for job in self._ready if not doomed(job))
        for key in list(self._waiting):
            queue = self._waiting[key]
            dropped.extend(job for job in queue if doomed(job))
            kept = deque(job for job in queue if not doomed(job))
            if kept:
                self._waiting[key] = kept
            else:
                del self._waiting[key]
        for job in dropped:
            self._buffered_records -= 1
            self._buffered_bytes -= job.size_bytes
        # A key whose eligible job was dropped passes to its next waiting job, if any.
        holding = {job.key for job in self._ready} | {job.key for job in self._running}
        for key in [key for key in self._held if key not in holding]:
            self._release(key)
        return dropped

    def running_where(self, partitions: Callable[[Hashable], bool]) -> list[Job[T]]:
        return [job for job in self._running if partitions(job.partition)]

    def _release(self, key: Hashable) -> None:
        queue = self._waiting.get(key)
        if queue:
            self._ready.append(queue.popleft())
            if not queue:
                del self._waiting[key]
        else:
            self._held.discard(key)
