"""What is due now: the retry buffer's timer heap, without Kafka."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.retry.buffer import MAX_POLL_WAIT_MS, RetryBuffer
from streams.retry.record import RawRecord


def rec(offset: int, *, topic: str = "email-jobs.retry", partition: int = 0, size: int = 10) -> RawRecord:
    return RawRecord(topic, partition, offset, None, b"x" * size, {})


def test_only_records_whose_time_has_come_are_due_earliest_first() -> None:
    buffer = RetryBuffer(max_records=10, max_bytes=10_000)
    buffer.add(rec(1), due_at_ms=300)
    buffer.add(rec(2), due_at_ms=100)
    buffer.add(rec(3), due_at_ms=200)
    assert buffer.due(99) == []
    assert [p.record.offset for p in buffer.due(200)] == [2, 3]
    assert len(buffer) == 1
    assert [p.record.offset for p in buffer.due(10_000)] == [1]


def test_wait_is_until_the_next_due_record_and_never_longer_than_the_poll_cap() -> None:
    buffer = RetryBuffer(max_records=10, max_bytes=10_000)
    assert buffer.wait_ms(now_ms=0) == MAX_POLL_WAIT_MS
    buffer.add(rec(1), due_at_ms=120)
    assert buffer.wait_ms(now_ms=100) == 20
    assert buffer.wait_ms(now_ms=500) == 0
    buffer.add(rec(2), due_at_ms=0)
    buffer.due(100)
    assert buffer.wait_ms(now_ms=-10_000) == MAX_POLL_WAIT_MS


def test_full_by_records_or_by_bytes() -> None:
    by_count = RetryBuffer(max_records=2, max_bytes=10_000)
    by_count.add(rec(1), 0)
    assert not by_count.full
    by_count.add(rec(2), 0)
    assert by_count.full
    by_bytes = RetryBuffer(max_records=100, max_bytes=25)
    by_bytes.add(rec(1, size=20), 0)
    assert not by_bytes.full
    by_bytes.add(rec(2, size=20), 0)
    assert by_bytes.full
    by_bytes.due(0)
    assert not by_bytes.full
    assert by_bytes.bytes == 0


def test_a_failed_redelivery_waits_again() -> None:
    buffer = RetryBuffer(max_records=10, max_bytes=10_000)
    buffer.add(rec(1), 0)
    [pending] = buffer.due(0)
    buffer.put_back(pending, due_at_ms=1_000)
    assert buffer.due(999) == []
    assert [p.record.offset for p in buffer.due(1_000)] == [1]


def test_revoked_partitions_are_forgotten() -> None:
    buffer = RetryBuffer(max_records=10, max_bytes=10_000)
    buffer.add(rec(1, partition=0), 50)
    buffer.add(rec(2, partition=1), 10)
    buffer.add(rec(3, partition=1, topic="ad-jobs.retry"), 20)
    assert buffer.drop({("email-jobs.retry", 1)}) == 1
    assert [(p.record.topic, p.record.offset) for p in buffer.due(100)] == [
        ("ad-jobs.retry", 3),
        ("email-jobs.retry", 1),
    ]
    assert buffer.bytes == 0


@given(st.lists(st.tuples(st.integers(0, 1_000), st.integers(0, 1_000)), max_size=50), st.integers(0, 1_000))
def test_due_never_hands_out_a_record_early_and_keeps_every_late_one(
    dues: list[tuple[int, int]], now_ms: int
) -> None:
    buffer = RetryBuffer(max_records=1_000, max_bytes=1_000_000)
    for offset, (due_at_ms, _) in enumerate(dues):
        buffer.add(rec(offset), due_at_ms)
    out = buffer.due(now_ms)
    assert all(p.due_at_ms <= now_ms for p in out)
    assert [p.due_at_ms for p in out] == sorted(p.due_at_ms for p in out)
    assert len(out) == sum(1 for due_at_ms, _ in dues if due_at_ms <= now_ms)
    assert len(buffer) == len(dues) - len(out)
