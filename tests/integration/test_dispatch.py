"""Dispatched subscribers on the real broker: speed-up, key order, watermark commits, rebalance.

Each test builds a small FastStream app (a `KafkaBroker`, a router with a middleware that
records what it wraps, one dispatched subscriber whose handler sleeps) on topics of its
own, and deletes them afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faststream import BaseMiddleware, FastStream
from faststream.kafka import KafkaBroker, KafkaRouter
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.subscriber.usecase import DefaultSubscriber
from faststream.message import StreamMessage

from streams.dispatch import DispatchOptions, DispatchSubscriber, dispatched_subscriber
from tests.integration.conftest import KAFKA
from tests.integration.kafka_tools import delete_topics, group_lag
from tests.polling import eventually

pytestmark = pytest.mark.integration

HANDLER_S = 0.1

Where = tuple[int, int]  # (partition, offset)


@dataclass
class Probe:
    """What one app saw: jobs started and finished, keys running, middleware scopes."""

    started: list[Where] = field(default_factory=list)
    finished: list[tuple[Where, str]] = field(default_factory=list)
    running_keys: set[str] = field(default_factory=set)
    overlaps: list[Where] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    wrapped: list[Where] = field(default_factory=list)
    wrapping: set[Where] = field(default_factory=set)
    max_wrapping: int = 0
    unwrapped: list[Where] = field(default_factory=list)
    max_buffered_records: int = 0
    max_uncommitted_records: int = 0
    first_start_s: float = 0.0
    last_end_s: float = 0.0

    def finished_at(self) -> set[Where]:
        return {where for where, _ in self.finished}

    def jobs_per_s(self) -> float:
        return len(self.finished) / (self.last_end_s - self.first_start_s)


@dataclass
class App:
    app: FastStream
    subscriber: DefaultSubscriber
    probe: Probe

    async def __aenter__(self) -> App:
        await self.app.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.app.stop()


def build_app(
    topic: str,
    group_id: str,
    *,
    options: DispatchOptions | None,
    handler_s: float = HANDLER_S,
    stuck: set[Where] = frozenset(),  # type: ignore[assignment]
    **consumer_options: Any,
) -> App:
    """A worker-shaped app; `options=None` builds FastStream's own subscriber, one job at a time."""
    probe = Probe()

    class WrapEachJob(BaseMiddleware):
        async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
            record = msg.raw_message
            where = (record.partition, record.offset)
            probe.wrapped.append(where)
            probe.wrapping.add(where)
            probe.max_wrapping = max(probe.max_wrapping, len(probe.wrapping))
            try:
                return await call_next(msg)
            finally:
                probe.wrapping.discard(where)

    broker = KafkaBroker(KAFKA)
    router = KafkaRouter(middlewares=[WrapEachJob])
    subscriber: DefaultSubscriber
    if options is None:
        subscriber = router.subscriber(
            topic, group_id=group_id, auto_offset_reset="earliest", **consumer_options
        )
    else:
        subscriber = dispatched_subscriber(
            router,
            topic,
            options=options,
            group_id=group_id,
            auto_offset_reset="earliest",
            **consumer_options,
        )

    @subscriber
    async def handle(body: dict[str, Any], msg: KafkaMessage) -> None:
        record = msg.raw_message
        assert not isinstance(record, tuple)
        where = (record.partition, record.offset)
        key = body["key"]
        if where not in probe.wrapping:
            probe.unwrapped.append(where)
        if key in probe.running_keys:
            probe.overlaps.append(where)
        if not probe.started:
            probe.first_start_s = time.monotonic()
        probe.started.append(where)
        probe.running_keys.add(key)
        probe.in_flight += 1
        probe.max_in_flight = max(probe.max_in_flight, probe.in_flight)
        if isinstance(subscriber, DispatchSubscriber) and (stats := subscriber.dispatch_stats()) is not None:
            probe.max_buffered_records = max(probe.max_buffered_records, stats.buffered_records)
            probe.max_uncommitted_records = max(probe.max_uncommitted_records, stats.uncommitted_records)
        try:
            if where in stuck:
                await asyncio.Event().wait()  # until cancelled
            await asyncio.sleep(handler_s)
        finally:
            probe.running_keys.discard(key)
            probe.in_flight -= 1
        probe.finished.append((where, key))
        probe.last_end_s = time.monotonic()

    broker.include_router(router)
    return App(FastStream(broker), subscriber, probe)


@pytest.fixture
async def new_topic(
    servers: dict[str, str], run_id: str
) -> AsyncIterator[Callable[[str, int], Awaitable[str]]]:
    created: list[str] = []
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()

    async def create(name: str, partitions: int) -> str:
        topic = f"t{run_id}.dispatch.{name}"
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        created.append(topic)
        return topic

    try:
        yield create
    finally:
        await admin.close()
        await delete_topics(KAFKA, tuple(created))


async def produce(topic: str, jobs: list[tuple[str, int]], *, partition: int | None = None) -> None:
    """Publish `(key, seq)` jobs, keyed by `key`, in order; acknowledged before returning."""
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = [
            await producer.send(
                topic, json.dumps({"key": key, "seq": seq}).encode(), key=key.encode(), partition=partition
            )
            for key, seq in jobs
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def committed(group_id: str, tp: TopicPartition) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id, partitions=[tp])
    finally:
        await admin.close()
    meta = offsets.get(tp)
    return meta.offset if meta is not None and meta.offset >= 0 else None


def offsets_per_key(probe: Probe) -> dict[str, list[Where]]:
    per_key: dict[str, list[Where]] = defaultdict(list)
    for where, key in probe.finished:
        per_key[key].append(where)
    return per_key


async def test_jobs_run_many_at_once_in_key_order_each_wrapped_by_the_middleware_and_committed(
    new_topic: Callable[[str, int], Awaitable[str]], run_id: str
) -> None:
    # Five jobs for each of 160 users. With few keys per partition (deep per-key chains)
    # the buffer fills with one partition's keys and fewer run at once.
    keys, per_key = 160, 5
    jobs = [(f"user-{k}", seq) for seq in range(per_key) for k in range(keys)]
    topic = await new_topic("many", 3)
    baseline_topic = await new_topic("baseline", 3)
    await produce(topic, jobs)
    await produce(baseline_topic, jobs[:20])
    options = DispatchOptions(concurrency=64, max_buffered_records=200, max_uncommitted_records=2_000)

    async with build_app(baseline_topic, f"dispatch-{run_id}-baseline", options=None) as baseline:
        await eventually(lambda: len(baseline.probe.finished) == 20, timeout_s=30, what="baseline jobs")
    async with build_app(topic, f"dispatch-{run_id}-many", options=options) as dispatched:
        probe = dispatched.probe
        await eventually(lambda: len(probe.finished) == len(jobs), timeout_s=60, what="every job")
        lag_zero = await _eventually_lag_zero(f"dispatch-{run_id}-many", topic)

    speedup = probe.jobs_per_s() / baseline.probe.jobs_per_s()
    print(
        f"\none at a time: {baseline.probe.jobs_per_s():.1f} jobs/s; "
        f"dispatched: {probe.jobs_per_s():.1f} jobs/s "
        f"({speedup:.0f}x, {probe.max_in_flight} at once, {HANDLER_S * 1000:.0f} ms per job); "
        f"buffered at most {probe.max_buffered_records}, uncommitted at most {probe.max_uncommitted_records}"
    )
    assert speedup >= 20
    assert baseline.probe.max_in_flight == 1
    assert 20 < probe.max_in_flight <= options.concurrency
    # Each job exactly once, and one key's jobs one at a time in offset (= publish) order.
    assert Counter(probe.started) == Counter(probe.finished_at())
    assert len(probe.finished_at()) == len(jobs)
    assert probe.overlaps == []
    for places in offsets_per_key(probe).values():
        assert len(places) == per_key
        assert places == sorted(places)
    # The router's middleware wrapped each job on its own, many side by side.
    assert sorted(probe.wrapped) == sorted(probe.finished_at())
    assert probe.unwrapped == []
    assert probe.max_wrapping > 20
    # Bounded memory; the offsets committed at the end of every partition.
    assert probe.max_buffered_records <= options.max_buffered_records + 1
    assert probe.max_uncommitted_records <= options.max_uncommitted_records + 1
    assert lag_zero


async def _eventually_lag_zero(group_id: str, topic: str) -> bool:
    async def lag_is_zero() -> bool:
        return await group_lag(KAFKA, group_id, topic) == 0

    return await eventually(lag_is_zero, timeout_s=15, interval_s=0.2, what=f"{group_id} lag 0")


async def test_a_restarted_group_resumes_at_the_watermark_and_loses_nothing(
    new_topic: Callable[[str, int], Awaitable[str]], run_id: str
) -> None:
    topic = await new_topic("restart", 1)
    group_id = f"dispatch-{run_id}-restart"
    tp = TopicPartition(topic, 0)
    jobs = [(f"user-{offset % 6}", offset) for offset in range(60)]
    await produce(topic, jobs, partition=0)
    stuck = (0, 30)  # user-0's job at offset 30 hangs: it and user-0's later jobs stay unfinished
    blocked = {offset for offset in range(30, 60) if offset % 6 == 0}
    options = DispatchOptions(
        concurrency=8, max_buffered_records=20, commit_interval_ms=100, shutdown_grace_s=0.5
    )

    async with build_app(topic, group_id, options=options, stuck={stuck}) as first:
        await eventually(
            lambda: len(first.probe.finished) == 60 - len(blocked), timeout_s=30, what="first run"
        )

        async def watermark_committed() -> bool:
            return await committed(group_id, tp) == 30

        reached: bool = await eventually(watermark_committed, timeout_s=10, what="commit at the stuck offset")
        assert reached
    assert await committed(group_id, tp) == 30, (
        "stopping cancelled the stuck job and committed nothing past it"
    )

    async with build_app(topic, group_id, options=options) as second:
        await eventually(lambda: len(second.probe.finished) == 30, timeout_s=30, what="second run")
        assert await _eventually_lag_zero(group_id, topic)

    first_run = {offset for _, offset in first.probe.finished_at()}
    second_run = {offset for _, offset in second.probe.finished_at()}
    assert first_run | second_run == set(range(60)), "nothing lost"
    assert second_run == set(range(30, 60)), "the restart began at the watermark"
    repeated = first_run & second_run
    assert all(offset > 30 for offset in repeated)
    assert len(repeated) <= options.max_uncommitted_records
    assert [o for (_, o), key in second.probe.finished if key == "user-0"] == sorted(blocked)
    print(f"\nrestart at offset 30: {len(repeated)} jobs finished above the watermark ran again")


async def test_a_consumer_joining_mid_stream_loses_nothing_and_repeats_at_most_the_window(
    new_topic: Callable[[str, int], Awaitable[str]], run_id: str
) -> None:
    topic = await new_topic("rebalance", 4)
    group_id = f"dispatch-{run_id}-rebalance"
    keys, per_key = 60, 10
    jobs = [(f"user-{k}", seq) for seq in range(per_key) for k in range(keys)]
    await produce(topic, jobs)
    options = DispatchOptions(
        concurrency=4, max_buffered_records=50, max_uncommitted_records=200, commit_interval_ms=200
    )
    fast_rejoin_ms = 300  # heartbeat interval: a member sees the rebalance sooner

    async with build_app(
        topic, group_id, options=options, handler_s=0.05, heartbeat_interval_ms=fast_rejoin_ms
    ) as first:
        await eventually(
            lambda: len(first.probe.finished) >= 100, timeout_s=30, what="first consumer under way"
        )
        async with build_app(
            topic, group_id, options=options, handler_s=0.05, heartbeat_interval_ms=fast_rejoin_ms
        ) as second:

            def everything_done() -> bool:
                return len(first.probe.finished_at() | second.probe.finished_at()) == len(jobs)

            await eventually(everything_done, timeout_s=60, what="every job by one consumer or the other")
            assert await _eventually_lag_zero(group_id, topic)
            assert isinstance(first.subscriber, DispatchSubscriber)
            assert isinstance(second.subscriber, DispatchSubscriber)
            first_stats = first.subscriber.dispatch_stats()
            second_stats = second.subscriber.dispatch_stats()
            assert first_stats is not None

    assert second_stats is not None
    runs = Counter(where for probe in (first.probe, second.probe) for where, _ in probe.finished)
    repeats = sum(runs.values()) - len(runs)
    revocations = first_stats.revocations + second_stats.revocations
    print(
        f"\nrebalance: first consumer ran {len(first.probe.finished)} jobs, "
        f"second {len(second.probe.finished)}; {revocations} revocations; {repeats} jobs ran again"
    )
    assert len(runs) == len(jobs), "nothing lost"
    assert second.probe.finished, "the second consumer got partitions"
    assert first_stats.revocations >= 1
    # An eager rebalance revokes every partition, even one that comes back to the same
    # consumer: what finished above a revoked partition's watermark runs again, on either.
    assert repeats <= revocations * options.max_uncommitted_records
    for probe in (first.probe, second.probe):
        assert probe.overlaps == []
        for places in offsets_per_key(probe).values():
            first_attempts = list(dict.fromkeys(places))
            assert first_attempts == sorted(first_attempts), "one consumer runs a key's jobs in offset order"
