"""The retry scheduler against a stub consumer: redelivery, watermark commits, back-pressure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition

from streams.retry import headers as h
from streams.retry.scheduler import RetryScheduler

EMAIL_RETRY = "email-jobs.retry"
NOTIFIER_RETRY = "ad-results.email-notifier.retry"


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


class StubConsumer:
    def __init__(self) -> None:
        self.incoming: list[Record] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.paused: set[TopicPartition] = set()
        self.assigned = {TopicPartition(EMAIL_RETRY, 0), TopicPartition(NOTIFIER_RETRY, 0)}
        self.listener: ConsumerRebalanceListener | None = None

    def subscribe(self, topics: Iterable[str], listener: ConsumerRebalanceListener) -> None:
        self.listener = listener

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused |= set(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused -= set(partitions)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def getmany(self, *, timeout_ms: int, max_records: int) -> Mapping[TopicPartition, list[Any]]:
        out: dict[TopicPartition, list[Any]] = {}
        for record in self.incoming:
            tp = TopicPartition(record.topic, record.partition)
            if tp not in self.paused:
                out.setdefault(tp, []).append(record)
        self.incoming = [r for r in self.incoming if TopicPartition(r.topic, r.partition) in self.paused]
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


class Target:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    async def __call__(self, value: bytes, key: bytes | None, headers: dict[str, str]) -> None:
        self.values.append(value)


class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_000

    def __call__(self) -> int:
        return self.now_ms


def retry(topic: str, offset: int, due_at_ms: int, value: bytes = b"{}") -> Record:
    return Record(topic, 0, offset, b"k", value, [(h.DUE_AT_MS, str(due_at_ms).encode())])


def build(max_records: int = 100) -> tuple[RetryScheduler, StubConsumer, Target, Target, Clock]:
    consumer, email, notifier, clock = StubConsumer(), Target(), Target(), Clock()
    scheduler = RetryScheduler(
        consumer,
        targets={EMAIL_RETRY: email, NOTIFIER_RETRY: notifier},
        max_records=max_records,
        max_bytes=1_000_000,
        clock_ms=clock,
    )
    return scheduler, consumer, email, notifier, clock


async def test_a_record_goes_back_to_its_own_target_when_due_and_not_before() -> None:
    scheduler, consumer, email, notifier, clock = build()
    consumer.incoming = [retry(EMAIL_RETRY, 0, 2_000, b"e"), retry(NOTIFIER_RETRY, 0, 1_500, b"n")]
    await scheduler.step()
    assert (email.values, notifier.values) == ([], [])
    clock.now_ms = 1_500
    await scheduler.step()
    assert (email.values, notifier.values) == ([], [b"n"])
    clock.now_ms = 2_000
    await scheduler.step()
    assert email.values == [b"e"]


async def test_commits_stop_below_the_lowest_record_not_yet_redelivered() -> None:
    scheduler, consumer, _, _, clock = build()
    consumer.incoming = [
        retry(EMAIL_RETRY, 0, 5_000),
        retry(EMAIL_RETRY, 1, 1_000),
        retry(EMAIL_RETRY, 2, 1_000),
    ]
    await scheduler.step()
    tp = TopicPartition(EMAIL_RETRY, 0)
    assert all(c[tp] == 0 for c in consumer.commits), "offset 0 is still waiting: nothing past it"
    clock.now_ms = 5_000
    await scheduler.step()
    assert consumer.commits[-1] == {tp: 3}


async def test_a_full_buffer_pauses_the_retry_topics_until_records_leave() -> None:
    scheduler, consumer, _, _, clock = build(max_records=2)
    consumer.incoming = [retry(EMAIL_RETRY, i, 2_000) for i in range(2)]
    await scheduler.step()
    await scheduler.step()
    assert consumer.paused == consumer.assigned
    clock.now_ms = 2_000
    await scheduler.step()
    await scheduler.step()
    assert consumer.paused == set()


async def test_revoked_partitions_commit_what_was_redelivered_and_forget_the_rest() -> None:
    scheduler, consumer, email, _, clock = build()
    consumer.incoming = [retry(EMAIL_RETRY, 0, 1_000), retry(EMAIL_RETRY, 1, 9_000)]
    clock.now_ms = 1_000
    await scheduler.step()
    consumer.commits.clear()
    await scheduler.on_revoked({TopicPartition(EMAIL_RETRY, 0)})
    assert consumer.commits == [] or consumer.commits[-1] == {TopicPartition(EMAIL_RETRY, 0): 1}
    clock.now_ms = 9_000
    await scheduler.step()
    assert email.values == [b"{}"], "the revoked record belongs to its new owner now"
    assert scheduler.pending == 0
