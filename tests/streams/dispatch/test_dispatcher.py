"""The dispatcher against a stub consumer: order, retries in place, commits, pauses, rebalance, shutdown."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pytest
from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.dispatch.dispatcher import Dispatcher, ordering_key, record_size_bytes
from streams.dispatch.options import DispatchOptions
from tests.polling import eventually

TOPIC = "jobs"
P0 = TopicPartition(TOPIC, 0)
P1 = TopicPartition(TOPIC, 1)


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes = b"{}"
    topic: str = TOPIC
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def serialized_key_size(self) -> int:
        return -1 if self.key is None else len(self.key)

    @property
    def serialized_value_size(self) -> int:
        return len(self.value)


@dataclass
class StubConsumer:
    assigned: set[TopicPartition] = field(default_factory=lambda: {P0, P1})
    paused: set[TopicPartition] = field(default_factory=set)
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    failing_commits: int = 0
    hanging_commits: bool = False

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused |= set(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused -= set(partitions)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.hanging_commits:
            await asyncio.Event().wait()
        if self.failing_commits:
            self.failing_commits -= 1
            raise RuntimeError("coordinator not available")
        self.commits.append(dict(offsets))

    def committed(self, tp: TopicPartition) -> int | None:
        for commit in reversed(self.commits):
            if tp in commit:
                return int(commit[tp])
        return None


class Jobs:
    """The `process` function: records what ran, and holds a job until the test releases it."""

    def __init__(self) -> None:
        self.started: list[Record] = []
        self.finished: list[Record] = []
        self.running: set[Record] = set()
        self.max_running = 0
        self.gates: dict[tuple[int, int], asyncio.Event] = {}
        self.failures: dict[tuple[int, int], int] = defaultdict(int)
        self.overlapping_keys: list[bytes] = []

    def hold(self, partition: int, offset: int) -> asyncio.Event:
        return self.gates.setdefault((partition, offset), asyncio.Event())

    def fail(self, partition: int, offset: int, times: int) -> None:
        self.failures[(partition, offset)] = times

    async def __call__(self, record: Record) -> None:
        if record.key is not None and any(r.key == record.key for r in self.running):
            self.overlapping_keys.append(record.key)
        self.started.append(record)
        self.running.add(record)
        self.max_running = max(self.max_running, len(self.running))
        try:
            if (gate := self.gates.get((record.partition, record.offset))) is not None:
                await gate.wait()
            if self.failures[(record.partition, record.offset)] > 0:
                self.failures[(record.partition, record.offset)] -= 1
                raise ConnectionError("broker down")
        finally:
            self.running.discard(record)
        self.finished.append(record)


def options(**overrides: float) -> DispatchOptions:
    values: dict[str, float] = {
        "concurrency": 4,
        "max_buffered_records": 100,
        "max_uncommitted_records": 1_000,
        "commit_interval_ms": 10,
        "revoke_grace_s": 1.0,
        "shutdown_grace_s": 1.0,
        "commit_timeout_s": 0.5,
        "failure_pause_initial_s": 0.01,
        "failure_pause_max_s": 0.02,
    }
    values.update(overrides)
    return DispatchOptions(**values)  # type: ignore[arg-type]


def dispatcher(jobs: Jobs, consumer: StubConsumer, **overrides: float) -> Dispatcher[Record]:
    result: Dispatcher[Record] = Dispatcher(
        process=jobs, consumer=lambda: consumer, options=options(**overrides), name="test"
    )
    result.start()
    return result


def submit_all(target: Dispatcher[Record], records: Iterable[Record]) -> None:
    for record in records:
        target.submit(record)


async def test_same_key_jobs_run_one_at_a_time_in_offset_order_and_others_side_by_side() -> None:
    jobs, consumer = Jobs(), StubConsumer()
    subject = dispatcher(jobs, consumer, concurrency=8)
    records = [Record(0, offset, f"k{offset % 3}".encode()) for offset in range(12)]
    holds = [jobs.hold(0, offset) for offset in range(3)]

    submit_all(subject, records)
    await eventually(lambda: len(jobs.started) == 3, timeout_s=2, what="one job per key started")
    assert subject.stats().buffered_records == 9
    for gate in holds:
        gate.set()
    await eventually(lambda: len(jobs.finished) == 12, timeout_s=2, what="all jobs")

    assert jobs.overlapping_keys == []
    for key in (b"k0", b"k1", b"k2"):
        assert [r.offset for r in jobs.finished if r.key == key] == [
            r.offset for r in records if r.key == key
        ]
    await eventually(lambda: consumer.committed(P0) == 12, timeout_s=2, what="commit of the watermark")
    await subject.close()


async def test_unkeyed_records_run_at_once_up_to_the_concurrency() -> None:
    jobs, consumer = Jobs(), StubConsumer()
    subject = dispatcher(jobs, consumer, concurrency=3)
    for offset in range(6):
        jobs.hold(0, offset)

    submit_all(subject, [Record(0, offset, None) for offset in range(6)])

    await eventually(lambda: len(jobs.started) == 3, timeout_s=2, what="three unkeyed jobs")
    assert subject.stats().in_flight == 3
    for gate in jobs.gates.values():
        gate.set()
    await eventually(lambda: len(jobs.finished) == 6, timeout_s=2, what="all jobs")
    await subject.close()


async def test_commits_stop_below_the_lowest_unfinished_record_and_are_batched() -> None:
    jobs, consumer = Jobs(), StubConsumer()
    subject = dispatcher(jobs, consumer, concurrency=50, commit_interval_ms=50)
    stuck = jobs.hold(0, 3)

    submit_all(subject, [Record(0, offset, f"k{offset}".encode()) for offset in range(100)])
    await eventually(lambda: len(jobs.finished) == 99, timeout_s=2, what="all but the stuck job")
    await eventually(lambda: consumer.committed(P0) == 3, timeout_s=2, what="commit at the stuck offset")
    assert subject.stats().uncommitted_records == 97
    stuck.set()
    await eventually(lambda: consumer.committed(P0) == 100, timeout_s=2, what="commit past the end")

    assert all(offset <= 3 for commit in consumer.commits[:-1] for offset in commit.values())
    assert len(consumer.commits) < 10, "one commit per timer tick, not per record"
    await subject.close()


async def test_a_failing_job_is_run_again_in_place_and_keeps_its_key_blocked() -> None:
    jobs, consumer = Jobs(), StubConsumer()
    subject = dispatcher(jobs, consumer)
    jobs.fail(0, 0, times=3)

    submit_all(subject, [Record(0, 0, b"a"), Record(0, 1, b"a"), Record(0, 2, b"b")])
    await eventually(lambda: len(jobs.finished) == 3, timeout_s=2, what="all jobs")

    starts = [r.offset for r in jobs.started]
    assert starts.count(0) == 4
    assert starts.index(1) > max(i for i, offset in enumerate(starts) if offset == 0), "a's next job waited"
    assert [r.offset for r in jobs.finished if r.key == b"a"] == [0, 1]
    assert jobs.overlapping_keys == []
    assert subject.stats().failed_attempts == 3
    await eventually(lambda: consumer.committed(P0) == 3, timeout_s=2, what="commit")
    await subject.close()


async def test_a_cancelled_error_from_inside_the_job_is_a_failure_not_an_end() -> None:
    consumer = StubConsumer()
    attempts: list[int] = []

    async def process(record: Record) -> None:
        attempts.append(record.offset)
        if len(attempts) == 1:
            cancelled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            cancelled.cancel()
            await cancelled  # e.g. a producer's send future, cancelled as it closes

    subject: Dispatcher[Record] = Dispatcher(
        process=process, consumer=lambda: consumer, options=options(), name="test"
    )
    subject.start()
    subject.submit(Record(0, 0, b"a"))

    await eventually(lambda: consumer.committed(P0) == 1, timeout_s=2, what="the job, run again, committed")
    assert attempts == [0, 0]
    await subject.close()


async def test_a_job_failing_for_good_is_never_committed_past() -> None:
    jobs, consumer = Jobs(), StubConsumer()
    subject = dispatcher(jobs, consumer, shutdown_grace_s=0.05)
    jobs.fail(0, 1, times=10_000)

    submit_all(subject, [Record(0, offset, f"k{offset}".encode()) for offset in range(5)])
    await eventually(lambda: subject.stats().failed_attempts >= 5, timeout_s=2, what="repeated attempts")
    await eventually(lambda: consumer.committed(P0) == 1, timeout_s=2, what="commit below the failing job")
    await subject.close()

    assert consumer.committed(P0) == 1
    assert subject.stats().abandoned == 1


async def test_a_full_buffer_pauses_the_assignment_until_it_drains_below_half() -> None:
    jobs, consumer = Jobs(), StubConsumer()
    subject = dispatcher(jobs, consumer, concurrency=1, max_buffered_records=4, max_uncommitted_records=10)
    first = jobs.hold(0, 0)

    submit_all(subject, [Record(0, offset, None) for offset in range(5)])
    assert consumer.paused == {P0, P1}
    assert subject.stats().paused

    first.set()
    await eventually(lambda: not consumer.paused, timeout_s=2, what="resume")
    await eventually(lambda: len(jobs.finished) == 5, timeout_s=2, what="all jobs")
    assert subject.stats().pauses == 1
    await subject.close()


async def test_the_uncommitted_window_is_bounded_behind_a_slow_job() -> None:
    jobs, consumer = Jobs(), StubConsumer()
    subject = dispatcher(jobs, consumer, concurrency=4, max_buffered_records=2, max_uncommitted_records=8)
    slow = jobs.hold(0, 0)

    for offset in range(8):
        subject.submit(Record(0, offset, f"k{offset}".encode()))
        await eventually(lambda offset=offset: len(jobs.started) >= min(offset + 1, 8), timeout_s=2)  # type: ignore[misc]

    assert consumer.paused == {P0, P1}, "eight read and not committable: pause"
    slow.set()
    await eventually(lambda: not consumer.paused, timeout_s=2, what="resume once the watermark moves")
    await subject.close()


async def test_a_partition_assigned_while_paused_is_paused_too() -> None:
    jobs, consumer = Jobs(), StubConsumer(assigned={P0})
    subject = dispatcher(jobs, consumer, concurrency=1, max_buffered_records=1, max_uncommitted_records=5)
    jobs.hold(0, 0)
    submit_all(subject, [Record(0, 0, None), Record(0, 1, None)])
    assert consumer.paused == {P0}

    consumer.assigned.add(P1)
    await subject.on_assigned({P1})

    assert consumer.paused == {P0, P1}
    await subject.close()


async def test_revoke_drops_buffered_records_lets_in_flight_finish_and_commits() -> None:
    jobs, consumer = Jobs(), StubConsumer()
    subject = dispatcher(jobs, consumer, concurrency=2, commit_interval_ms=60_000)
    in_flight = jobs.hold(0, 0)
    jobs.hold(1, 0)
    submit_all(subject, [Record(0, 0, b"a"), Record(0, 1, b"a"), Record(1, 0, b"b")])
    await eventually(lambda: len(jobs.started) == 2, timeout_s=2, what="two jobs running")

    revoking = asyncio.create_task(subject.on_revoked({P0}))
    await eventually(lambda: subject.stats().buffered_records == 0, timeout_s=2, what="buffer dropped")
    subject.submit(Record(0, 2, b"c"))  # a revoked partition takes nothing new
    in_flight.set()
    await revoking

    assert [(r.partition, r.offset) for r in jobs.finished] == [(0, 0)]
    assert consumer.commits == [{P0: 1}], "the watermark of the revoked partition only"
    assert subject.stats().refused == 1
    # Assigned again: the new owner's records start from the committed offset.
    await subject.on_assigned({P0})
    subject.submit(Record(0, 1, b"a"))
    await eventually(lambda: len(jobs.finished) == 2, timeout_s=2, what="the dropped record, read again")
    jobs.gates[(1, 0)].set()
    await subject.close()
    assert consumer.committed(P0) == 2
    assert consumer.committed(P1) == 1


async def test_revoke_cancels_jobs_still_running_after_the_grace() -> None:
    jobs, consumer = Jobs(), StubConsumer()
    subject = dispatcher(jobs, consumer, revoke_grace_s=0.05, commit_interval_ms=60_000)
    jobs.hold(0, 1)
    submit_all(subject, [Record(0, 0, b"a"), Record(0, 1, b"b"), Record(0, 2, b"c")])
    await eventually(lambda: len(jobs.finished) == 2, timeout_s=2, what="the quick jobs")

    await asyncio.wait_for(subject.on_revoked({P0}), timeout=2)

    assert consumer.commits == [{P0: 1}]
    stats = subject.stats()
    assert (stats.abandoned, stats.in_flight, stats.uncommitted_records) == (1, 0, 0)
    await subject.close()


async def test_close_lets_in_flight_jobs_finish_commits_and_refuses_new_records() -> None:
    jobs, consumer = Jobs(), StubConsumer()
    subject = dispatcher(jobs, consumer, concurrency=1, commit_interval_ms=60_000)
    running = jobs.hold(0, 0)
    submit_all(subject, [Record(0, 0, b"a"), Record(0, 1, b"b")])
    await eventually(lambda: len(jobs.started) == 1, timeout_s=2, what="first job")

    closing = asyncio.create_task(subject.close())
    await eventually(lambda: consumer.paused == {P0, P1}, timeout_s=2, what="fetching paused")
    subject.submit(Record(0, 2, b"c"))
    running.set()
    await closing

    assert [r.offset for r in jobs.started] == [0], "buffered records are not started on the way out"
    assert consumer.commits == [{P0: 1}]
    assert subject.stats().refused == 1


async def test_a_job_cancelled_from_outside_starts_no_other_job() -> None:
    """As when the event loop tears down: nothing new may be scheduled on it."""
    jobs, consumer = Jobs(), StubConsumer()
    subject = dispatcher(jobs, consumer, concurrency=1)
    jobs.hold(0, 0)
    submit_all(subject, [Record(0, 0, b"a"), Record(0, 1, b"b")])
    await eventually(lambda: jobs.started, timeout_s=2, what="first job")
    (task,) = [t for t in asyncio.all_tasks() if t.get_name().endswith("@0")]

    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert [r.offset for r in jobs.started] == [0]
    assert [t.get_name() for t in asyncio.all_tasks() if t.get_name().endswith("@1")] == []
    await subject.close()
    assert consumer.committed(P0) == 0


async def test_a_second_close_returns_only_when_the_first_has_committed() -> None:
    jobs, consumer = Jobs(), StubConsumer()
    subject = dispatcher(jobs, consumer, commit_interval_ms=60_000)
    running = jobs.hold(0, 0)
    subject.submit(Record(0, 0, b"a"))
    await eventually(lambda: jobs.started, timeout_s=2, what="the job")

    first = asyncio.create_task(subject.close())
    second = asyncio.create_task(subject.close())
    await eventually(lambda: consumer.paused, timeout_s=2, what="closing")
    assert not second.done()
    running.set()
    await asyncio.gather(first, second)

    assert consumer.commits == [{P0: 1}]


async def test_close_is_bounded_when_a_job_and_the_commit_hang() -> None:
    jobs, consumer = Jobs(), StubConsumer(hanging_commits=True)
    subject = dispatcher(jobs, consumer, shutdown_grace_s=0.05, commit_timeout_s=0.05)
    jobs.hold(0, 0)
    subject.submit(Record(0, 0, b"a"))
    await eventually(lambda: jobs.started, timeout_s=2, what="the job")

    await asyncio.wait_for(subject.close(), timeout=3)

    assert subject.stats().abandoned == 1


async def test_a_failed_commit_is_made_again_on_the_next_tick() -> None:
    jobs, consumer = Jobs(), StubConsumer(failing_commits=2)
    subject = dispatcher(jobs, consumer)

    subject.submit(Record(0, 0, b"a"))

    await eventually(lambda: consumer.committed(P0) == 1, timeout_s=2, what="commit after two failures")
    assert subject.stats().commit_failures == 2
    await subject.close()


async def test_records_of_partitions_not_assigned_are_refused_and_repeats_ignored() -> None:
    jobs, consumer = Jobs(), StubConsumer(assigned={P0})
    subject = dispatcher(jobs, consumer)

    submit_all(subject, [Record(1, 0, b"a"), Record(0, 5, b"a"), Record(0, 5, b"a"), Record(0, 4, b"b")])
    await eventually(lambda: len(jobs.finished) == 1, timeout_s=2, what="the one job")

    assert subject.stats().refused == 1
    await subject.close()
    assert consumer.commits[-1] == {P0: 6}


def test_order_key_is_scoped_by_topic_and_absent_without_a_kafka_key() -> None:
    assert ordering_key(Record(0, 0, b"a")) == (TOPIC, b"a")
    assert ordering_key(Record(0, 0, b"a", topic="other")) != ordering_key(Record(0, 0, b"a"))
    assert ordering_key(Record(0, 0, None)) is None
    assert record_size_bytes(Record(0, 0, b"ab", value=b"xyz", headers=(("h", b"12"),))) == 2 + 3 + 3


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([b"a", b"b", b"c", None]), st.integers(0, 5), st.booleans()),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 6),
)
def test_any_mix_of_keys_and_durations_keeps_key_order_and_commits_only_finished(
    plan: list[tuple[bytes | None, int, bool]], concurrency: int
) -> None:
    """Durations and arrival gaps count event-loop turns, so no example depends on the clock."""

    async def scenario() -> None:
        consumer = StubConsumer()
        finished: list[Record] = []
        running: set[bytes] = set()
        overlaps: list[bytes] = []
        passed_unfinished: list[int] = []

        async def process(record: Record) -> None:
            if record.key is not None:
                if record.key in running:
                    overlaps.append(record.key)
                running.add(record.key)
            for _ in range(plan[record.offset][1]):
                await asyncio.sleep(0)
            # Commits must never pass a record that has not finished.
            committed = consumer.committed(TopicPartition(TOPIC, record.partition))
            if committed is not None and committed > record.offset:
                passed_unfinished.append(record.offset)
            running.discard(record.key or b"")
            finished.append(record)

        subject: Dispatcher[Record] = Dispatcher(
            process=process, consumer=lambda: consumer, options=options(concurrency=concurrency), name="p"
        )
        subject.start()
        for offset, (key, _, pause_after) in enumerate(plan):
            subject.submit(Record(offset % 2, offset, key))
            if pause_after:
                await asyncio.sleep(0)
        await eventually(lambda: len(finished) == len(plan), timeout_s=5, interval_s=0.001)
        await subject.close()

        assert overlaps == []
        assert passed_unfinished == []
        for key in (b"a", b"b", b"c"):
            assert [r.offset for r in finished if r.key == key] == [
                o for o, (k, _, _) in enumerate(plan) if k == key
            ]
        for partition in (0, 1):
            offsets = [o for o in range(len(plan)) if o % 2 == partition]
            if offsets:
                assert consumer.committed(TopicPartition(TOPIC, partition)) == offsets[-1] + 1

    asyncio.run(scenario())


def test_options_refuse_a_window_smaller_than_buffer_plus_concurrency() -> None:
    with pytest.raises(ValueError, match="max_uncommitted_records"):
        DispatchOptions(concurrency=10, max_buffered_records=100, max_uncommitted_records=50)
    with pytest.raises(ValueError, match="concurrency"):
        DispatchOptions(concurrency=0)
