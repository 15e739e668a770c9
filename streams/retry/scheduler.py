"""Redelivers records from retry topics to where they are consumed, when they are due.

Non-blocking: every record of the retry topics is read at once into an in-memory
timer heap (`RetryBuffer`), so a retry due in 1 s never waits behind one due in 10
minutes. Offsets are committed with a watermark (`PartitionOffsets`, the dispatcher's): only below the
lowest record not yet redelivered, so a crash loses nothing; the records are read again.

Memory is bounded: when the buffer is full the consumer pauses its partitions until
some are redelivered. While it waits it keeps polling, so it stays in its group.

The Kafka consumer is passed in (`RetryConsumer`: aiokafka's `AIOKafkaConsumer` fits),
so the scheduler runs in tests against a stub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from aiokafka import ConsumerRebalanceListener, TopicPartition

from streams.dispatch.offsets import PartitionOffsets
from streams.retry import headers as h
from streams.retry.buffer import Pending, RetryBuffer
from streams.retry.record import RawRecord
from streams.retry.routing import Publish
from streams.tracing import in_record_trace

log = logging.getLogger(__name__)

STATS_INTERVAL_MS = 10_000
MAX_POLL_RECORDS = 500
FAILED_REDELIVERY_DELAY_MS = 1_000
COMMIT_TIMEOUT_S = 5.0


class RetryConsumer(Protocol):
    def subscribe(self, topics: Iterable[str], listener: ConsumerRebalanceListener) -> None: ...
    def assignment(self) -> set[TopicPartition]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def getmany(self, *, timeout_ms: int, max_records: int) -> Mapping[TopicPartition, list[Any]]: ...
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...


class RetryScheduler:
    """`targets` maps each retry topic to the publisher of the topic its records go back to."""

    def __init__(
        self,
        consumer: RetryConsumer,
        *,
        targets: Mapping[str, Publish],
        max_records: int,
        max_bytes: int,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._consumer = consumer
        self._targets = dict(targets)
        self._clock_ms = clock_ms
        self._buffer = RetryBuffer(max_records=max_records, max_bytes=max_bytes)
        self._marks: dict[TopicPartition, PartitionOffsets] = {}
        self._dirty: set[TopicPartition] = set()
        self._paused = False
        self._task: asyncio.Task[None] | None = None
        self.redelivered = 0
        self._next_stats_at_ms = 0

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe(tuple(self._targets), listener=_Listener(self.on_revoked))
        self._task = asyncio.create_task(self._run(), name="retry-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self._commit()
        except Exception:
            log.warning("final commit of the retry scheduler failed; those retries will be read again")
        finally:
            await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retry scheduler step failed; continuing")
                await asyncio.sleep(FAILED_REDELIVERY_DELAY_MS / 1000)

    async def step(self) -> None:
        """One round: read what arrived, redeliver what is due, commit the watermark."""
        self._apply_backpressure()
        wait_ms = self._buffer.wait_ms(self._clock_ms())
        batches = await self._consumer.getmany(timeout_ms=wait_ms, max_records=MAX_POLL_RECORDS)
        for tp, records in batches.items():
            for record in records:
                self._admit(tp, RawRecord.from_consumer_record(record))
        await self._redeliver(self._buffer.due(self._clock_ms()))
        await self._commit()
        self._log_stats()

    def _log_stats(self) -> None:
        now_ms = self._clock_ms()
        if now_ms < self._next_stats_at_ms or not (len(self._buffer) or self.redelivered):
            return
        self._next_stats_at_ms = now_ms + STATS_INTERVAL_MS
        log.info(
            "retry buffer: %d waiting (%d bytes)%s; %d redelivered so far",
            len(self._buffer),
            self._buffer.bytes,
            ", paused" if self._paused else "",
            self.redelivered,
        )

    def _apply_backpressure(self) -> None:
        full = self._buffer.full
        if full and not self._paused:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True
            log.warning(
                "retry buffer full (%d records, %d bytes); pausing retry topics",
                len(self._buffer),
                self._buffer.bytes,
            )
        elif not full and self._paused:
            self._consumer.resume(*self._consumer.assignment())
            self._paused = False

    def _admit(self, tp: TopicPartition, record: RawRecord) -> None:
        due_at_ms = _int_or(record.headers.get(h.DUE_AT_MS), self._clock_ms())
        if not self._marks.setdefault(tp, PartitionOffsets()).read(record.offset):
            raise ValueError(f"offset {record.offset} of {tp} arrived after a later one")
        self._buffer.add(record, due_at_ms)

    async def _redeliver(self, due: list[Pending]) -> None:
        if not due:
            return
        results = await asyncio.gather(
            *(self._target(p.record)(p.record.value, p.record.key, p.record.headers) for p in due),
            return_exceptions=True,
        )
        now_ms = self._clock_ms()
        for pending, result in zip(due, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("redelivery of %s failed (%r); trying again shortly", pending.record, result)
                self._buffer.put_back(pending, now_ms + FAILED_REDELIVERY_DELAY_MS)
                continue
            tp = TopicPartition(pending.record.topic, pending.record.partition)
            mark = self._marks.get(tp)
            if mark is not None:  # None: the partition was revoked meanwhile
                mark.finish(pending.record.offset)
                self._dirty.add(tp)
            self.redelivered += 1

    def _target(self, record: RawRecord) -> Publish:
        # No span is current here: the redelivery continues the trace in the record's headers.
        return in_record_trace(self._targets[record.topic])

    async def _commit(self, only: Iterable[TopicPartition] | None = None) -> None:
        targets = set(only) if only is not None else set(self._dirty)
        offsets = {}
        for tp in targets:
            mark = self._marks.get(tp)
            offset = mark.committable() if mark else None
            if offset is not None:
                offsets[tp] = offset
        if offsets:
            await self._consumer.commit(offsets)
        self._dirty -= targets

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            # Bounded: a topic deleted under a running worker must not hang the rebalance.
            await asyncio.wait_for(self._commit(revoked & set(self._marks)), COMMIT_TIMEOUT_S)
        except Exception:
            log.warning("commit on revoke failed; those retries will be read again by their new owner")
        # The new owner reads them again from the committed watermark.
        self._buffer.drop({(tp.topic, tp.partition) for tp in revoked})
        for tp in revoked:
            self._marks.pop(tp, None)
            self._dirty.discard(tp)
        self._paused = False


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_revoked: Callable[[set[TopicPartition]], Any]) -> None:
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        return None


def _int_or(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
