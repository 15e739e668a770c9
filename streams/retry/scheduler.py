"""Redelivers records from retry topics to their origin topic when they are due.

Non-blocking: every record of the retry topics is read at once into an in-memory
timer heap, so a retry due in 1 s never waits behind one due in 10 minutes. Offsets
are committed with a watermark (`PartitionWatermark`): only below the lowest record
not yet redelivered, so a crash loses nothing; the records are read again.

Memory is bounded: when the heap holds `max_records` records or `max_bytes` bytes,
the consumer pauses its partitions until some are redelivered. While it waits it
keeps polling, so it stays in its consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from streams.retry import headers as h
from streams.retry.record import RawRecord
from streams.retry.routing import Publish
from streams.retry.watermark import PartitionWatermark
from streams.topics import RETRY_SUFFIX

log = logging.getLogger(__name__)

MAX_POLL_WAIT_MS = 500
STATS_INTERVAL_MS = 10_000
MAX_POLL_RECORDS = 500
FAILED_REDELIVERY_DELAY_MS = 1_000


@dataclass(order=True)
class _Pending:
    due_at_ms: int
    seq: int
    record: RawRecord = field(compare=False)
    target_topic: str = field(compare=False)


class RetryScheduler:
    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: str,
        retry_topics: Iterable[str],
        publish: Publish,
        max_records: int,
        max_bytes: int,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._topics = tuple(retry_topics)
        self._publish = publish
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._clock_ms = clock_ms
        self._heap: list[_Pending] = []
        self._bytes = 0
        self._seq = itertools.count()
        self._marks: dict[TopicPartition, PartitionWatermark] = {}
        self._dirty: set[TopicPartition] = set()
        self._paused = False
        self._task: asyncio.Task[None] | None = None
        self.redelivered = 0
        self._next_stats_at_ms = 0
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=MAX_POLL_RECORDS,
        )

    @property
    def pending(self) -> int:
        return len(self._heap)

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe(self._topics, listener=_Listener(self))
        self._task = asyncio.create_task(self._run(), name="retry-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self._commit()
        finally:
            await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retry scheduler step failed; continuing")
                await asyncio.sleep(FAILED_REDELIVERY_DELAY_MS / 1000)

    async def _step(self) -> None:
        self._apply_backpressure()
        batches = await self._consumer.getmany(timeout_ms=self._poll_wait_ms(), max_records=MAX_POLL_RECORDS)
        for tp, records in batches.items():
            for record in records:
                self._admit(tp, record)
        await self._redeliver_due()
        await self._commit()
        self._log_stats()

    def _log_stats(self) -> None:
        now_ms = self._clock_ms()
        if now_ms < self._next_stats_at_ms or not (self._heap or self.redelivered):
            return
        self._next_stats_at_ms = now_ms + STATS_INTERVAL_MS
        log.info(
            "retry buffer: %d waiting (%d bytes)%s; %d redelivered so far",
            len(self._heap),
            self._bytes,
            ", paused" if self._paused else "",
            self.redelivered,
        )

    def _poll_wait_ms(self) -> int:
        if not self._heap:
            return MAX_POLL_WAIT_MS
        return max(0, min(MAX_POLL_WAIT_MS, self._heap[0].due_at_ms - self._clock_ms()))

    def _apply_backpressure(self) -> None:
        full = len(self._heap) >= self._max_records or self._bytes >= self._max_bytes
        if full and not self._paused:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True
            log.warning(
                "retry buffer full (%d records, %d bytes); pausing retry topics", len(self._heap), self._bytes
            )
        elif not full and self._paused:
            self._consumer.resume(*self._consumer.assignment())
            self._paused = False

    def _admit(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        raw = RawRecord.from_consumer_record(record)
        due_at_ms = _int_or(raw.headers.get(h.DUE_AT_MS), self._clock_ms())
        target = raw.headers.get(h.ORIGIN_TOPIC) or raw.topic.removesuffix(RETRY_SUFFIX)
        self._marks.setdefault(tp, PartitionWatermark()).started(raw.offset)
        heapq.heappush(self._heap, _Pending(due_at_ms, next(self._seq), raw, target))
        self._bytes += len(raw.value)

    async def _redeliver_due(self) -> None:
        now_ms = self._clock_ms()
        due: list[_Pending] = []
        while self._heap and self._heap[0].due_at_ms <= now_ms:
            due.append(heapq.heappop(self._heap))
        if not due:
            return
        results = await asyncio.gather(
            *(self._publish(p.target_topic, p.record.value, p.record.key, p.record.headers) for p in due),
            return_exceptions=True,
        )
        for pending, result in zip(due, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("redelivery of %s failed (%r); trying again shortly", pending.record, result)
                pending.due_at_ms = now_ms + FAILED_REDELIVERY_DELAY_MS
                heapq.heappush(self._heap, pending)
                continue
            self._bytes -= len(pending.record.value)
            tp = TopicPartition(pending.record.topic, pending.record.partition)
            mark = self._marks.get(tp)
            if mark is not None:  # None: the partition was revoked meanwhile
                mark.finished(pending.record.offset)
                self._dirty.add(tp)
            self.redelivered += 1

    async def _commit(self, only: Iterable[TopicPartition] | None = None) -> None:
        targets = set(only) if only is not None else self._dirty
        offsets = {}
        for tp in targets:
            mark = self._marks.get(tp)
            offset = mark.committable() if mark else None
            if offset is not None:
                offsets[tp] = offset
        if offsets:
            await self._consumer.commit(offsets)
        self._dirty -= targets

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await self._commit(revoked & set(self._marks))
        except Exception:
            log.exception("commit on revoke failed; those retries will be read again")
        # The new owner reads them again from the committed watermark.
        kept = [p for p in self._heap if TopicPartition(p.record.topic, p.record.partition) not in revoked]
        heapq.heapify(kept)
        self._heap = kept
        self._bytes = sum(len(p.record.value) for p in kept)
        for tp in revoked:
            self._marks.pop(tp, None)
            self._dirty.discard(tp)
        self._paused = False


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, scheduler: RetryScheduler) -> None:
        self._scheduler = scheduler

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._scheduler._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        return None


def _int_or(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
