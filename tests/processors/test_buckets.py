"""Naming time buckets: every worker names a period's bucket the same way, and reads it back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from processors.buckets import DAY_S, Rotation, TimeBuckets

DATABASE = cast("AsyncDatabase[dict[str, Any]]", object())  # naming needs no database


def test_a_day_bucket_is_named_after_its_day_in_utc() -> None:
    buckets = TimeBuckets(DATABASE, "email_deliveries")
    late = datetime(2026, 1, 1, 23, 59, 59, tzinfo=UTC)
    assert buckets.name(buckets.period(late)) == "email_deliveries_20260101"
    assert buckets.name(buckets.period(late + timedelta(seconds=1))) == "email_deliveries_20260102"
    # The same instant in another time zone is the same period.
    berlin = late.astimezone(datetime.now().astimezone().tzinfo)
    assert buckets.period(berlin) == buckets.period(late)


def test_a_naive_datetime_counts_as_utc() -> None:
    buckets = TimeBuckets(DATABASE, "jobs")
    assert buckets.period(datetime(2026, 1, 1, 12)) == buckets.period(datetime(2026, 1, 1, 12, tzinfo=UTC))


@pytest.mark.parametrize("bucket_s", [DAY_S, 3_600, 600, 1])
def test_names_read_back_as_their_periods(bucket_s: int) -> None:
    buckets = TimeBuckets(DATABASE, "jobs", bucket_s=bucket_s)
    period = buckets.period(datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC))
    assert buckets.parse(buckets.name(period)) == period
    assert buckets.parse(buckets.name(period + 1)) == period + 1


@pytest.mark.parametrize(
    "name",
    ["jobs", "jobs_2026010", "jobs_20261301", "other_20260101", "jobs_20260101T000000", "jobs_x_20260101"],
)
def test_other_collections_are_not_buckets(name: str) -> None:
    assert TimeBuckets(DATABASE, "jobs").parse(name) is None


def test_a_period_must_divide_a_day() -> None:
    with pytest.raises(ValueError, match="divide a day"):
        TimeBuckets(DATABASE, "jobs", bucket_s=7_000)
    with pytest.raises(ValueError, match="divide a day"):
        TimeBuckets(DATABASE, "jobs", bucket_s=0)


async def test_a_new_period_readies_its_bucket_once_then_drops_the_expired_ones() -> None:
    buckets = TimeBuckets(DATABASE, "codes", bucket_s=3_600)
    calls: list[tuple[str, int]] = []

    async def ensure(period: int) -> None:
        calls.append(("ensure", period))

    async def expire(period: int) -> list[str]:
        calls.append(("expire", period))
        return []

    rotation = Rotation(buckets, ensure=ensure, expire=expire)
    start = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    first = buckets.period(start)
    # This process's first period is readied, not expired (`prepare` does that at start).
    await asyncio.gather(*(rotation.enter(start + timedelta(minutes=n)) for n in range(5)))
    assert calls == [("ensure", first)]
    # The next hour: readied once, and what expired is dropped, however many callers.
    await asyncio.gather(*(rotation.enter(start + timedelta(hours=1, minutes=n)) for n in range(5)))
    assert calls[1:] == [("ensure", first + 1), ("expire", first + 1)]
    # A caller with a lagging clock changes nothing.
    assert await rotation.enter(start) == first
    assert len(calls) == 3
    assert await rotation.prepare(start + timedelta(hours=1)) == []
    assert calls[3:] == [("ensure", first + 1), ("expire", first + 1)]
