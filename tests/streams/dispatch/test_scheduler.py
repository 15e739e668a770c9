"""Key-ordered scheduling: one job per key at a time, in offer order, up to the concurrency."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.dispatch.scheduler import Job, KeyedScheduler


def job(offset: int, key: str | None, *, partition: int = 0, size_bytes: int = 10) -> Job[None]:
    return Job(partition, offset, key, size_bytes, None)


def drain(scheduler: KeyedScheduler[None]) -> list[Job[None]]:
    started = []
    while (next_job := scheduler.take()) is not None:
        started.append(next_job)
    return started


def test_a_key_runs_one_job_at_a_time_in_offer_order() -> None:
    scheduler: KeyedScheduler[None] = KeyedScheduler(concurrency=10)
    a0, b0, a1, a2 = job(0, "a"), job(1, "b"), job(2, "a"), job(3, "a")
    for item in (a0, b0, a1, a2):
        scheduler.offer(item)

    assert drain(scheduler) == [a0, b0]
    assert scheduler.buffered_records == 2
    scheduler.finish(b0)
    assert drain(scheduler) == []
    scheduler.finish(a0)
    assert drain(scheduler) == [a1]
    scheduler.finish(a1)
    assert drain(scheduler) == [a2]


def test_concurrency_caps_running_jobs_and_unkeyed_jobs_wait_only_for_capacity() -> None:
    scheduler: KeyedScheduler[None] = KeyedScheduler(concurrency=2)
    jobs = [job(offset, None) for offset in range(4)]
    for item in jobs:
        scheduler.offer(item)

    assert drain(scheduler) == jobs[:2]
    assert (scheduler.running, scheduler.buffered_records, scheduler.buffered_bytes) == (2, 2, 20)
    scheduler.finish(jobs[1])
    assert drain(scheduler) == [jobs[2]]


def test_a_busy_key_takes_turns_with_the_others() -> None:
    scheduler: KeyedScheduler[None] = KeyedScheduler(concurrency=1)
    a0, a1, b0 = job(0, "a"), job(1, "a"), job(2, "b")
    for item in (a0, a1, b0):
        scheduler.offer(item)

    assert drain(scheduler) == [a0]
    scheduler.finish(a0)
    assert drain(scheduler) == [b0], "b was eligible before a's second job"
    scheduler.finish(b0)
    assert drain(scheduler) == [a1]


def test_dropping_a_partition_forgets_its_buffered_jobs_and_frees_their_keys() -> None:
    scheduler: KeyedScheduler[None] = KeyedScheduler(concurrency=1)
    running = job(0, "x", partition=1)
    kept_behind_dropped = [job(1, "a", partition=0), job(2, "a", partition=1), job(3, "a", partition=0)]
    for item in (running, *kept_behind_dropped):
        scheduler.offer(item)
    assert drain(scheduler) == [running]

    dropped = scheduler.drop(lambda partition: partition == 0)

    assert set(dropped) == {kept_behind_dropped[0], kept_behind_dropped[2]}
    assert scheduler.buffered_records == 1
    scheduler.finish(running)
    assert drain(scheduler) == [kept_behind_dropped[1]]
    assert scheduler.running_where(lambda partition: partition == 1) == [kept_behind_dropped[1]]


def test_dropping_everything_leaves_running_jobs_alone() -> None:
    scheduler: KeyedScheduler[None] = KeyedScheduler(concurrency=1)
    first, second = job(0, "a"), job(1, "a")
    scheduler.offer(first)
    scheduler.offer(second)
    drain(scheduler)

    assert scheduler.drop() == [second]
    assert (scheduler.running, scheduler.buffered_records, scheduler.buffered_bytes) == (1, 0, 0)
    scheduler.finish(first)
    scheduler.offer(job(2, "a"))
    assert len(drain(scheduler)) == 1, "the key was released"


def test_concurrency_must_be_positive() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        KeyedScheduler[None](concurrency=0)


KEYS = st.sampled_from(["a", "b", "c", "d", None])


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 4), st.data())
def test_any_interleaving_keeps_key_order_capacity_and_accounting(
    concurrency: int, data: st.DataObject
) -> None:
    scheduler: KeyedScheduler[None] = KeyedScheduler(concurrency)
    offered: dict[Hashable, list[Job[None]]] = defaultdict(list)
    started: dict[Hashable, list[Job[None]]] = defaultdict(list)
    buffered: list[Job[None]] = []
    running: list[Job[None]] = []
    dropped: set[int] = set()
    next_offset = 0

    for _ in range(data.draw(st.integers(1, 60), label="steps")):
        action = data.draw(st.sampled_from(["offer", "offer", "finish", "drop"]), label="action")
        if action == "offer":
            key = data.draw(KEYS, label="key")
            item = job(next_offset, key, partition=next_offset % 2, size_bytes=data.draw(st.integers(0, 100)))
            next_offset += 1
            scheduler.offer(item)
            offered[key].append(item)
            buffered.append(item)
        elif action == "finish" and running:
            item = running.pop(data.draw(st.integers(0, len(running) - 1), label="which"))
            scheduler.finish(item)
        elif action == "drop":
            partition = data.draw(st.integers(0, 1), label="partition")
            for item in scheduler.drop(lambda p, partition=partition: p == partition):  # type: ignore[misc]
                assert item.partition == partition
                dropped.add(id(item))
                buffered.remove(item)

        for item in drain(scheduler):
            buffered.remove(item)
            running.append(item)
            started[item.key].append(item)

        keys_running = [item.key for item in running if item.key is not None]
        assert len(keys_running) == len(set(keys_running)), "two jobs of one key at once"
        assert scheduler.running == len(running) <= concurrency
        assert scheduler.buffered_records == len(buffered)
        assert scheduler.buffered_bytes == sum(item.size_bytes for item in buffered)
        if len(running) < concurrency:
            # Work-conserving: whatever still waits is behind a running job of its key.
            assert all(item.key is not None and item.key in keys_running for item in buffered)

    for started_key, jobs in started.items():
        if started_key is not None:
            expected = [item for item in offered[started_key] if id(item) not in dropped][: len(jobs)]
            assert jobs == expected, f"key {started_key} started out of order"
