"""Newer codes win, on the real MongoDB-wire store: what `newer_sent` answers after
`record_sent`, for the process that recorded (its memo) and for another one (the store);
the hourly buckets by issue time, which of them a call reads and which are dropped; what
is stored; and the benchmark's smoke run."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from benchmarks import supersession_shape
from processors.email.supersession import LatestCodes, code_key
from processors.store import Document

pytestmark = pytest.mark.integration

MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")
NOW = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
T0_MS = int(NOW.timestamp() * 1000) - 60_000  # 12:29
BUCKET = "email_codes_20260101T120000"  # T0's, and NOW's
ADA = code_key("ada@example.com", "sign-in")


def clock() -> datetime:
    return NOW


@pytest.fixture
async def database() -> AsyncIterator[AsyncDatabase[Document]]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(MONGODB_URL, tz_aware=True)
    name = f"test_codes_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


@pytest.fixture
async def codes(database: AsyncDatabase[Document]) -> AsyncIterator[LatestCodes]:
    built = LatestCodes(database, clock=clock)
    yield built
    await built.aclose()


@pytest.fixture
async def other(database: AsyncDatabase[Document]) -> AsyncIterator[LatestCodes]:
    """Another process on the same store: it knows only what it reads."""
    built = LatestCodes(database, clock=clock)
    yield built
    await built.aclose()


@pytest.fixture(params=["same", "other"], ids=["same-process", "other-process"])
def asker(request: pytest.FixtureRequest, codes: LatestCodes, other: LatestCodes) -> LatestCodes:
    return codes if request.param == "same" else other


async def stored(database: AsyncDatabase[Document]) -> dict[str, list[Document]]:
    return {
        name: await database[name].find().to_list() for name in sorted(await database.list_collection_names())
    }


def test_the_key_ignores_the_case_and_spaces_of_the_address_but_not_the_purpose() -> None:
    assert code_key(" Ada@Example.COM ", "sign-in") == ADA
    assert code_key("ada@example.com", "password-reset") != ADA
    assert code_key("bob@example.com", "sign-in") != ADA
    assert len(ADA) == 32
    assert int(ADA, 16) >= 0


async def test_an_older_code_is_superseded_by_a_newer_one_sent(
    codes: LatestCodes, asker: LatestCodes
) -> None:
    # Given the code issued at T0 + 1 s was sent
    await codes.record_sent(ADA, T0_MS + 1_000, "job-new", NOW)

    # When the code issued at T0 comes up, Then it is superseded; the newer one is not
    assert await asker.newer_sent(ADA, T0_MS, NOW) is True
    assert await asker.newer_sent(ADA, T0_MS + 1_000, NOW) is False


async def test_a_newer_code_is_not_superseded_by_an_older_one_sent(
    codes: LatestCodes, asker: LatestCodes
) -> None:
    await codes.record_sent(ADA, T0_MS, "job-old", NOW)

    assert await asker.newer_sent(ADA, T0_MS + 1, NOW) is False


async def test_a_code_issued_at_the_same_time_is_not_superseded(
    codes: LatestCodes, asker: LatestCodes
) -> None:
    await codes.record_sent(ADA, T0_MS, "job-a", NOW)

    assert await asker.newer_sent(ADA, T0_MS, NOW) is False


async def test_nothing_sent_supersedes_nothing(asker: LatestCodes) -> None:
    assert await asker.newer_sent(ADA, T0_MS, NOW) is False


async def test_other_purposes_and_recipients_are_independent(codes: LatestCodes, asker: LatestCodes) -> None:
    await codes.record_sent(ADA, T0_MS + 1_000, "job-new", NOW)

    assert await asker.newer_sent(code_key("ada@example.com", "password-reset"), T0_MS, NOW) is False
    assert await asker.newer_sent(code_key("bob@example.com", "sign-in"), T0_MS, NOW) is False
    assert await asker.newer_sent(code_key("ADA@example.com", "sign-in"), T0_MS, NOW) is True


async def test_the_newest_of_several_codes_sent_counts(codes: LatestCodes, asker: LatestCodes) -> None:
    for offset_ms, job in [(3_000, "c"), (1_000, "a"), (2_000, "b")]:
        await codes.record_sent(ADA, T0_MS + offset_ms, f"job-{job}", NOW)

    assert await asker.newer_sent(ADA, T0_MS + 2_999, NOW) is True
    assert await asker.newer_sent(ADA, T0_MS + 3_000, NOW) is False


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def clock_at(at: datetime) -> Callable[[], datetime]:
    return lambda: at


async def test_a_code_is_stored_in_the_bucket_of_its_issue_hour_and_read_after_the_hour_turns(
    database: AsyncDatabase[Document],
) -> None:
    # Given a code issued a second before 13:00 and sent a second after it
    turn = datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
    before = LatestCodes(database, clock=lambda: turn + timedelta(seconds=1))
    await before.record_sent(ADA, ms(turn) - 1_000, "job-new", turn + timedelta(seconds=1))
    await before.aclose()

    # When another process asks about an older code a minute after 13:00
    after = LatestCodes(database, clock=lambda: turn + timedelta(minutes=1))
    superseded = await after.newer_sent(ADA, ms(turn) - 60_000, turn + timedelta(minutes=1))
    await after.aclose()

    # Then it found the record in the bucket of 12:00, where its issue time put it
    assert superseded is True
    by_bucket = await stored(database)
    assert (len(by_bucket["email_codes_20260101T120000"]), by_bucket["email_codes_20260101T130000"]) == (
        1,
        [],
    )
    assert sorted(after._readers) == [after.buckets.period(turn + h * HOUR) for h in (-1, 0, 1)]


async def test_a_first_delivery_reads_its_hour_and_the_next(other: LatestCodes) -> None:
    assert await other.newer_sent(ADA, ms(NOW), NOW) is False

    assert [other.buckets.name(p) for p in other._readers] == [BUCKET, "email_codes_20260101T130000"]


async def test_a_newer_code_from_a_producer_whose_clock_is_ahead_is_seen(
    codes: LatestCodes, asker: LatestCodes
) -> None:
    # (its issue time falls in the next hour, by the clock of this machine)
    await codes.record_sent(ADA, ms(NOW + timedelta(minutes=40)), "job-new", NOW)

    assert await asker.newer_sent(ADA, T0_MS, NOW) is True


async def test_a_retry_of_a_code_issued_hours_ago_reads_those_hours_buckets(
    codes: LatestCodes, other: LatestCodes, database: AsyncDatabase[Document]
) -> None:
    # Given a code issued 5 h ago comes up again (a retry), and one issued 3 h ago was sent
    await codes.record_sent(ADA, ms(NOW - 3 * HOUR), "job-new", NOW - 3 * HOUR + timedelta(seconds=5))

    # Then the old one is superseded, the newer not; from the buckets of 07:00 to 13:00
    assert await other.newer_sent(ADA, ms(NOW - 5 * HOUR), NOW) is True
    assert await other.newer_sent(code_key("bob@example.com", "sign-in"), ms(NOW - 5 * HOUR), NOW) is False
    assert sorted(other._readers) == [other.buckets.period(NOW + h * HOUR) for h in range(-5, 2)]
    assert [(r.batches, r.items) for r in other._readers.values()] == [(2, 2)] * 7
    assert list(await stored(database)) == ["email_codes_20260101T090000", BUCKET]
    fresh = LatestCodes(database, clock=clock)
    assert await fresh.newer_sent(ADA, ms(NOW - 3 * HOUR), NOW) is False
    await fresh.aclose()


async def test_a_read_reaches_back_a_day_and_two_buckets_at_most(other: LatestCodes) -> None:
    # A code lives at most a day: one issued 30 h ago reads the last 25 hours and the next one
    await other.newer_sent(ADA, ms(NOW - 30 * HOUR), NOW)

    assert sorted(other._readers) == [other.buckets.period(NOW + h * HOUR) for h in range(-24, 2)]


async def test_a_code_issued_ahead_of_the_next_hour_reads_its_own_bucket(other: LatestCodes) -> None:
    await other.newer_sent(ADA, ms(NOW + 3 * HOUR), NOW)

    assert sorted(other._readers) == [other.buckets.period(NOW + 3 * HOUR)]


async def test_a_code_sent_two_days_ago_is_not_read(database: AsyncDatabase[Document]) -> None:
    # (a code lives at most a day: an older one that comes up two days later has expired)
    writer = LatestCodes(database, clock=clock)
    await writer.record_sent(ADA, T0_MS + 1_000, "job-new", NOW)
    await writer.aclose()

    reader = LatestCodes(database, clock=lambda: NOW + 2 * DAY)
    assert await reader.newer_sent(ADA, T0_MS, NOW + 2 * DAY) is False
    await reader.aclose()


async def test_prepare_drops_the_records_of_codes_issued_more_than_26_hours_ago(
    database: AsyncDatabase[Document],
) -> None:
    # Given codes issued (and sent) 0 to 30 hours ago
    ages = (0, 1, 24, 25, 26, 27, 30)
    for hours in ages:
        at = NOW - hours * HOUR
        writer = LatestCodes(database, clock=clock_at(at))
        await writer.record_sent(ADA, ms(at), f"job-{hours}", at)
        await writer.aclose()

    # When a worker starts
    codes = LatestCodes(database, clock=clock)
    dropped = await codes.prepare(NOW)

    # Then the 26 hourly buckets up to this one stay (the oldest a read reaches is 24 h
    # before this hour's), and those before them go
    name = {hours: codes.buckets.name(codes.buckets.period(NOW - hours * HOUR)) for hours in ages}
    assert dropped == [name[30], name[27], name[26]]
    assert list(await stored(database)) == [name[25], name[24], name[1], name[0]]


async def test_a_code_issued_before_the_buckets_kept_is_not_recorded(
    codes: LatestCodes, database: AsyncDatabase[Document]
) -> None:
    # (it has expired: no read reaches its bucket, which must not come back)
    await codes.record_sent(ADA, ms(NOW - 26 * HOUR), "job-old", NOW)
    await codes.record_sent(ADA, ms(NOW - 25 * HOUR), "job-older-kept", NOW)

    assert list(await stored(database)) == ["email_codes_20251231T110000", BUCKET]
    assert await codes.newer_sent(ADA, ms(NOW - 27 * HOUR), NOW) is True  # from the memo


async def test_a_new_hour_drops_old_buckets_on_its_own(database: AsyncDatabase[Document]) -> None:
    codes = LatestCodes(database, clock=lambda: NOW + 26 * HOUR)
    await codes.record_sent(ADA, T0_MS, "job-1", NOW)
    await codes.record_sent(ADA, T0_MS + 25 * 3_600_000, "job-2", NOW + 25 * HOUR)
    assert list(await stored(database)) == [BUCKET, "email_codes_20260102T130000"]

    # When the hour turns: the bucket of 12:00 yesterday is 26 h back, out of every read
    await codes.record_sent(ADA, T0_MS + 26 * 3_600_000, "job-3", NOW + 26 * HOUR)
    await codes.aclose()

    assert list(await stored(database)) == ["email_codes_20260102T130000", "email_codes_20260102T140000"]


async def test_a_far_future_now_does_not_drop_buckets_still_in_use(database: AsyncDatabase[Document]) -> None:
    codes = LatestCodes(database, clock=clock)
    await codes.record_sent(ADA, T0_MS, "job-1", NOW)
    await codes.prepare(NOW + 10 * DAY)
    await codes.aclose()

    assert BUCKET in await stored(database)


async def test_the_bucket_length_is_a_setting(database: AsyncDatabase[Document]) -> None:
    codes = LatestCodes(database, bucket_s=86_400, clock=clock)
    await codes.record_sent(ADA, T0_MS + 1_000, "job-new", NOW)
    assert await codes.newer_sent(code_key("bob@example.com", "sign-in"), T0_MS, NOW) is False
    await codes.aclose()

    assert list(await stored(database)) == ["email_codes_20260101"]
    assert [codes.buckets.name(p) for p in codes._readers] == ["email_codes_20260101", "email_codes_20260102"]
    with pytest.raises(ValueError, match="divide a day"):
        LatestCodes(database, bucket_s=7 * 3_600)


async def test_recording_a_code_twice_is_fine(
    codes: LatestCodes, other: LatestCodes, database: AsyncDatabase[Document]
) -> None:
    # Given a redelivered job recorded again, by this process and by another one, also concurrently
    await codes.record_sent(ADA, T0_MS + 1_000, "job-new", NOW)
    await codes.record_sent(ADA, T0_MS + 1_000, "job-new", NOW)
    await asyncio.gather(*(other.record_sent(ADA, T0_MS + 1_000, "job-new", NOW) for _ in range(3)))

    # Then one document holds it, and it still supersedes older codes
    assert len((await stored(database))[BUCKET]) == 1
    assert await other.newer_sent(ADA, T0_MS, NOW) is True


async def test_the_store_holds_no_code_and_no_address(
    codes: LatestCodes, database: AsyncDatabase[Document]
) -> None:
    await codes.record_sent(code_key("ada@example.com", "sign-in"), T0_MS, "job-1", NOW)

    docs = (await stored(database))[BUCKET]
    assert docs == [{"_id": f"{ADA}:{T0_MS}:job-1", "key": ADA, "issued_at_ms": T0_MS}]
    assert "ada" not in repr(docs)


async def test_the_memo_answers_yes_and_the_store_answers_no(codes: LatestCodes) -> None:
    await codes.record_sent(ADA, T0_MS + 1_000, "job-new", NOW)

    assert await codes.newer_sent(ADA, T0_MS, NOW) is True
    assert (codes.memo_answers, codes.store_answers) == (1, 0)

    assert await codes.newer_sent(ADA, T0_MS + 1_000, NOW) is False
    assert (codes.memo_answers, codes.store_answers) == (1, 1)


async def test_a_newer_code_sent_by_another_process_is_seen_despite_the_memo(
    codes: LatestCodes, other: LatestCodes
) -> None:
    # Given this process sent the code of T0, then another process the one of T0 + 1 s
    await codes.record_sent(ADA, T0_MS, "job-old", NOW)
    await other.record_sent(ADA, T0_MS + 1_000, "job-new", NOW)

    # Then this process's memo (T0) does not hide the newer code
    assert await codes.newer_sent(ADA, T0_MS + 500, NOW) is True


async def test_what_was_read_is_remembered(codes: LatestCodes, other: LatestCodes) -> None:
    await codes.record_sent(ADA, T0_MS + 1_000, "job-new", NOW)

    assert await other.newer_sent(ADA, T0_MS, NOW) is True
    assert await other.newer_sent(ADA, T0_MS + 1, NOW) is True
    assert (other.memo_answers, other.store_answers) == (1, 1)


async def test_concurrent_asks_share_one_find_per_bucket(codes: LatestCodes, other: LatestCodes) -> None:
    # Given codes sent for 20 of 50 recipients
    keys = [code_key(f"user{i}@example.com", "sign-in") for i in range(50)]
    await asyncio.gather(
        *(codes.record_sent(key, T0_MS + 1_000, f"job-{i}", NOW) for i, key in enumerate(keys[:20]))
    )
    await other.prepare(NOW)  # (creating a bucket is not part of the batch)

    # When another process asks for all 50 at once
    answers = await asyncio.gather(*(other.newer_sent(key, T0_MS, NOW) for key in keys))

    # Then each got its own answer, from one find in each of the two buckets
    assert answers == [True] * 20 + [False] * 30
    assert [(r.batches, r.items) for r in other._readers.values()] == [(1, 50), (1, 50)]


async def test_the_memo_is_bounded(database: AsyncDatabase[Document]) -> None:
    codes = LatestCodes(database, memo_size=2, clock=clock)
    for i in range(3):
        await codes.record_sent(code_key(f"user{i}@example.com", "sign-in"), T0_MS + 1_000, f"job-{i}", NOW)

    for i in reversed(range(3)):  # the first one recorded is forgotten
        assert await codes.newer_sent(code_key(f"user{i}@example.com", "sign-in"), T0_MS, NOW) is True
    await codes.aclose()

    assert (codes.memo_answers, codes.store_answers) == (2, 1)


async def test_the_benchmark_runs() -> None:
    results = await supersession_shape.main(supersession_shape.parse(["--smoke"]))

    # One find per bucket read (this hour's and the next) for each batch of first deliveries,
    # retries reading more, and calls done at every rate, without errors
    assert [r.finds_per_batch for r in results] == [{1: 2, 50: 2}]
    assert all(r.first.calls and r.retry.calls and r.record_sent.calls and not r.errors for r in results)
    assert all(3 <= r.retry_buckets <= 22 for r in results)
