"""Runs the records of one consumer as concurrent jobs, in key order, and commits a watermark.

The consumer's poll loop hands each record to `submit`, which never blocks: the record
is buffered and started as soon as its key is free and there is capacity. Each job runs
in its own task; `process` is the whole per-record chain (for FastStream: decoder,
middlewares, handler), so everything in it sees one job.

- **Order:** jobs with the same key (topic + Kafka key) never overlap and start in
  offset order; records without a key carry no order promise and run as soon as there
  is capacity (see `ordering_key`).
- **Failure:** if `process` raises, the job is run again in place after a pause that
  doubles up to a bound, its key still blocked; it is never marked finished, so it is
  never committed past.
- **Commits:** a timer commits, per partition, the lowest offset read and not finished
  (`OffsetTracker`), never a consumer position, never once per record. A commit that
  overruns its timeout is not cancelled; the next one waits for it first.
- **Memory:** buffered records (count and bytes) and records not yet below the watermark
  are bounded; at a bound the consumer's partitions are paused (it keeps polling and
  stays in its group) and resumed below half.
- **Rebalance:** revoked partitions take no new records and lose their buffered ones;
  their in-flight jobs get `revoke_grace_s` to finish, the rest are cancelled, the
  watermark is committed and the partitions forgotten. The new owner starts there.
- **Shutdown (`close`):** no new records or starts; in-flight jobs get `shutdown_grace_s`,
  the rest are cancelled; the watermark is committed. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import TopicPartition

from streams.dispatch.backpressure import Backpressure, Change, Load
from streams.dispatch.offsets import OffsetTracker, PartitionOffsets
from streams.dispatch.options import DispatchOptions
from streams.dispatch.scheduler import Job, KeyedScheduler

log = logging.getLogger(__name__)

# How long cancelled jobs get to unwind before the dispatcher moves on without them.
ABANDON_WAIT_S = 1.0
# While commits keep failing (broker down), one warning per this many failures.
COMMIT_FAILURES_PER_WARNING = 60


class Record(Protocol):
    """What the dispatcher reads of a record; aiokafka's `ConsumerRecord` has it all."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> Any: ...
    @property
    def serialized_key_size(self) -> int: ...
    @property
    def serialized_value_size(self) -> int: ...
    @property
    def headers(self) -> Any: ...


class Consumer(Protocol):
    """The consumer calls the dispatcher makes; aiokafka's `AIOKafkaConsumer` fits."""

    def assignment(self) -> set[TopicPartition]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...


R = TypeVar("R", bound=Record)


@dataclass(frozen=True, slots=True)
class DispatchStats:
    in_flight: int
    buffered_records: int
    buffered_bytes: int
    uncommitted_records: int
    paused: bool
    started: int
    finished: int
    failed_attempts: int
    abandoned: int
    refused: int
    commits: int
    commit_failures: int
    pauses: int
    revocations: int


@dataclass(frozen=True, slots=True)
class _Work(Generic[R]):
    record: R
    offsets: PartitionOffsets  # of the assignment it was read in


def ordering_key(record: Record) -> Hashable | None:
    """Records with equal keys run one at a time, in order; None: no order promise.

    The key is scoped by topic. A record without a Kafka key is its own key: Kafka's
    producers spread such records over partitions with no order, so none is kept.
    """
    key = record.key
    if key is None:
        return None
    try:
        hash(key)
    except TypeError:  # a key deserializer returned something unhashable
        key = repr(key)
    return (record.topic, key)


def record_size_bytes(record: Record) -> int:
    headers = sum(len(name) + len(value or b"") for name, value in record.headers or ())
    return max(record.serialized_key_size, 0) + max(record.serialized_value_size, 0) + headers


class Dispatcher(Generic[R]):
    """`process` runs one record; `consumer` returns the consumer (None before it exists)."""

    def __init__(
        self,
        *,
        process: Callable[[R], Awaitable[None]],
        consumer: Callable[[], Consumer | None],
        options: DispatchOptions,
        name: str,
    ) -> None:
        self._process = process
        self._consumer = consumer
        self._options = options
        self._name = name
        self._scheduler: KeyedScheduler[_Work[R]] = KeyedScheduler(options.concurrency)
        self._offsets: OffsetTracker[TopicPartition] = OffsetTracker()
        self._backpressure = Backpressure(
            max_buffered_records=options.max_buffered_records,
            max_buffered_bytes=options.max_buffered_bytes,
            max_uncommitted_records=options.max_uncommitted_records,
        )
        self._owned: set[TopicPartition] = set()
        self._revoking: set[TopicPartition] = set()
        self._tasks: dict[Job[_Work[R]], asyncio.Task[None]] = {}
        self._changed = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._committer: asyncio.Task[None] | None = None
        self._commit_call: asyncio.Future[None] | None = None  # a commit still running
        self._closed = False
        self._close_done = asyncio.Event()
        self._started = 0
        self._finished = 0
        self._failed_attempts = 0
        self._abandoned = 0
        self._refused = 0
        self._commits = 0
        self._commit_failures = 0
        self._commit_failure_streak = 0
        self._pauses = 0
        self._revocations = 0

    def stats(self) -> DispatchStats:
        return DispatchStats(
            in_flight=self._scheduler.running,
            buffered_records=self._scheduler.buffered_records,
            buffered_bytes=self._scheduler.buffered_bytes,
            uncommitted_records=self._offsets.open,
            paused=self._backpressure.paused,
            started=self._started,
            finished=self._finished,
            failed_attempts=self._failed_attempts,
            abandoned=self._abandoned,
            refused=self._refused,
            commits=self._commits,
            commit_failures=self._commit_failures,
            pauses=self._pauses,
            revocations=self._revocations,
        )

    def start(self) -> None:
        """Start the commit timer (inside the running event loop)."""
        if self._committer is None and not self._closed:
            self._committer = asyncio.create_task(self._commit_periodically(), name=f"{self._name}:commit")

    # The poll loop's side

    def submit(self, record: R) -> None:
        """Take a record from the poll loop, in offset order per partition. Never blocks."""
        tp = TopicPartition(record.topic, record.partition)
        if self._closed or tp in self._revoking or not self._owns(tp):
            # Never read as far as the watermark is concerned: it is read again later.
            self._refused += 1
            return
        offsets = self._offsets.partition(tp)
        if not offsets.read(record.offset):
            log.debug("%s: %s@%d was read before; ignoring the repeat", self._name, tp, record.offset)
            return
        self._scheduler.offer(
            Job(tp, record.offset, ordering_key(record), record_size_bytes(record), _Work(record, offsets))
        )
        self._start_ready()
        self._apply_backpressure()

    def _owns(self, tp: TopicPartition) -> bool:
        if tp in self._owned:
            return True
        # aiokafka hands out records of a new assignment just before it calls the listener.
        consumer = self._consumer()
        if consumer is not None and tp in consumer.assignment():
            self._owned.add(tp)
            return True
        return False

    # Jobs

    def _start_ready(self) -> None:
        while not self._closed and (job := self._scheduler.take()) is not None:
            self._started += 1
            tp = job.partition
            self._tasks[job] = asyncio.create_task(self._run(job), name=f"{self._name}:{tp}@{job.offset}")

    async def _run(self, job: Job[_Work[R]]) -> None:
        done = False
        try:
            await self._process_until_done(job)
            done = True
        finally:
            self._scheduler.finish(job)
            self._tasks.pop(job, None)
            if done:
                job.payload.offsets.finish(job.offset)
                self._finished += 1
            self._changed.set()
            if not _cancel_requested():
                # A cancelled job starts nothing: the loop may be tearing down. Whoever
                # cancels it (`on_revoked`) starts the next jobs itself.
                self._start_ready()
            self._apply_backpressure()

    async def _process_until_done(self, job: Job[_Work[R]]) -> None:
        pause_s = self._options.failure_pause_initial_s
        attempt = 1
        while True:
            try:
                await self._process(job.payload.record)
                return
            except asyncio.CancelledError:
                if _cancel_requested():
                    raise
                # Not this task's cancellation (an awaited future was cancelled under the job):
                # letting it end the job would leave the record unfinished and never run again.
                error_name = "CancelledError"
            except Exception as error:
                error_name = type(error).__name__
            self._failed_attempts += 1
            # The class only: a message may carry a recipient or a code.
            log.warning(
                "%s: job %s@%d raised %s (attempt %d); running it again in %.1f s, its key waits",
                self._name,
                job.partition,
                job.offset,
                error_name,
                attempt,
                pause_s,
            )
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, self._options.failure_pause_max_s)
            attempt += 1

    async def _abandon(self, jobs: Iterable[Job[_Work[R]]]) -> None:
        tasks = [task for job in jobs if (task := self._tasks.get(job)) is not None]
        if not tasks:
            return
        self._abandoned += len(tasks)
        log.warning("%s: cancelling %d jobs still running; they will be read again", self._name, len(tasks))
        for task in tasks:
            task.cancel()
        _, pending = await asyncio.wait(tasks, timeout=ABANDON_WAIT_S)
        if pending:
            log.error(
                "%s: %d cancelled jobs are still running; they keep their keys and slots until they end",
                self._name,
                len(pending),
            )

    async def _wait_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not condition():
            remaining_s = deadline - loop.time()
            if remaining_s <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining_s)
        return True

    # Flow control

    def _apply_backpressure(self) -> None:
        if self._closed:
            return
        change = self._backpressure.update(
            Load(self._scheduler.buffered_records, self._scheduler.buffered_bytes, self._offsets.open)
        )
        consumer = self._consumer()
        if change is None or consumer is None:
            return
        partitions = consumer.assignment()
        if change is Change.PAUSE:
            self._pauses += 1
            consumer.pause(*partitions)
            log.debug(
                "%s: pausing fetches (%d buffered, %d bytes, %d uncommitted, %d in flight)",
                self._name,
                self._scheduler.buffered_records,
                self._scheduler.buffered_bytes,
                self._offsets.open,
                self._scheduler.running,
            )
        else:
            consumer.resume(*partitions)
            log.debug("%s: resuming fetches", self._name)

    # Commits

    async def _commit_periodically(self) -> None:
        interval_s = self._options.commit_interval_ms / 1000
        while True:
            await asyncio.sleep(interval_s)
            async with self._commit_lock:
                await self._commit_locked()

    async def _commit_locked(self, only: Collection[TopicPartition] | None = None) -> None:
        plan = self._offsets.commit_plan(only)
        consumer = self._consumer()
        if not plan or consumer is None:
            return
        try:
            await self._commit(consumer, plan)
        except Exception as error:
            self._commit_failures += 1
            self._commit_failure_streak += 1
            if self._commit_failure_streak % COMMIT_FAILURES_PER_WARNING == 1:
                log.warning(
                    "%s: committing %s failed (%s, %d in a row); it is committed again later",
                    self._name,
                    _describe(plan),
                    type(error).__name__,
                    self._commit_failure_streak,
                )
            return
        if self._commit_failure_streak:
            log.info("%s: committing again after %d failures", self._name, self._commit_failure_streak)
            self._commit_failure_streak = 0
        self._offsets.committed(plan)
        self._commits += 1
        log.debug("%s: committed %s", self._name, _describe(plan))

    async def _commit(self, consumer: Consumer, plan: Mapping[TopicPartition, int]) -> None:
        """`consumer.commit(plan)` within `commit_timeout_s`; TimeoutError if it takes longer.

        A commit that takes longer is not cancelled: aiokafka sends it from a shielded task
        of its own, which a cancellation leaves running with nobody to retrieve its error
        ("Task exception was never retrieved"). It runs on to its end, and the next commit
        first waits for it, within the same timeout.
        """
        loop = asyncio.get_running_loop()
        deadline_s = loop.time() + self._options.commit_timeout_s
        previous = self._commit_call
        if previous is not None:
            await asyncio.wait({previous}, timeout=self._options.commit_timeout_s)
            if not previous.done():
                raise TimeoutError("the previous commit is still running")
        call = self._commit_call = asyncio.ensure_future(consumer.commit(plan))
        call.add_done_callback(self._commit_ended)
        await asyncio.wait({call}, timeout=max(0.0, deadline_s - loop.time()))
        if not call.done():
            raise TimeoutError("the commit is still running")
        call.result()

    def _commit_ended(self, call: asyncio.Future[None]) -> None:
        if self._commit_call is call:
            self._commit_call = None
        if not call.cancelled():
            call.exception()  # retrieved here too: its caller may have stopped waiting

    # Rebalance and shutdown

    async def on_assigned(self, assigned: Collection[TopicPartition]) -> None:
        self._owned |= set(assigned)
        consumer = self._consumer()
        if consumer is not None and assigned and (self._backpressure.paused or self._closed):
            consumer.pause(*assigned)

    async def on_revoked(self, revoked: Collection[TopicPartition]) -> None:
        gone = set(revoked)
        if not gone:
            return
        self._revocations += 1
        self._owned -= gone
        self._revoking |= gone
        try:

            def in_gone(tp: Hashable) -> bool:
                return tp in gone

            dropped = self._scheduler.drop(in_gone)
            in_time = await self._wait_until(
                lambda: not self._scheduler.running_where(in_gone), self._options.revoke_grace_s
            )
            if not in_time:
                log.warning("%s: revoke grace of %.1f s ran out", self._name, self._options.revoke_grace_s)
            await self._abandon(self._scheduler.running_where(in_gone))
            async with self._commit_lock:
                await self._commit_locked(gone)
                self._offsets.forget(gone)
            log.info(
                "%s: revoked %s; %d buffered records dropped, to be read by the new owner",
                self._name,
                sorted(gone),
                len(dropped),
            )
        finally:
            self._revoking -= gone
        self._start_ready()
        self._apply_backpressure()

    async def close(self) -> None:
        """Stop taking records, let in-flight jobs finish within the grace, commit."""
        if self._closed:
            await self._close_done.wait()  # a second caller returns when the first is done
            return
        self._closed = True
        try:
            await self._drain_and_commit()
        finally:
            self._close_done.set()

    async def _drain_and_commit(self) -> None:
        consumer = self._consumer()
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.pause(*consumer.assignment())
        dropped = self._scheduler.drop()
        in_time = await self._wait_until(lambda: self._scheduler.running == 0, self._options.shutdown_grace_s)
        if not in_time:
            log.warning("%s: shutdown grace of %.1f s ran out", self._name, self._options.shutdown_grace_s)
        await self._abandon(list(self._tasks))
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
            self._committer = None
        async with self._commit_lock:
            await self._commit_locked()
        log.info("%s: closed; %d buffered records left to be read again", self._name, len(dropped))


def _cancel_requested() -> bool:
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def _describe(plan: Mapping[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}-{tp.partition}@{offset}" for tp, offset in sorted(plan.items()))
