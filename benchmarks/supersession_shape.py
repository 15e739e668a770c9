"""The supersession store's calls at their real size: one `newer_sent` batch, and the rates
of `newer_sent` (first deliveries and retries) and `record_sent` with many callers at once.

    .venv/bin/python -m benchmarks.supersession_shape                  # busy hours of 4,200 and 10,000
    .venv/bin/python -m benchmarks.supersession_shape --busy 20000 --per-day 200000
    .venv/bin/python -m benchmarks.supersession_shape --smoke          # tiny counts, a few seconds

Needs the MongoDB-wire store (`make services`). For each busy-hour size it makes a fresh
database `bench_<random>` and fills the hourly buckets by issue time as in the steady state
of `--per-day` codes a day: the 23 past hours' buckets with a 24th of them each, this hour's
with the busy size (`insert_many` in chunks). Then, with
`processors.email.supersession.LatestCodes` at a fixed `now` (no hour turns during a run)
and no memo (every call reads the store):

- **batch of k**: k concurrent first-delivery `newer_sent` calls (issued now) from a fresh
  process, which become one `find($in)` per bucket read (this hour's and the next); the
  time until all k are answered (median of `--repeat`). Half the keys have a record.
- **first deliveries**: `--concurrency` callers asking in a loop for `--duration-s` about
  codes issued now: they read this hour's bucket and the next.
- **retries**: the same, about codes issued `--retry-hours` ago (uniformly): they read
  every bucket from their issue hour's to the next one.
- **record_sent**: the same callers recording new codes issued now (run last: it grows
  this hour's bucket).

It drops the database at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from processors.claims import BatchSettings
from processors.email.supersession import LatestCodes, code_key

MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")
PREFIX = "email_codes"
PREFILL_CHUNK = 5_000

Document = dict[str, Any]


@dataclass
class Rate:
    calls: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    batches: int = 0
    per_batch: str = "find"

    @property
    def per_s(self) -> float:
        return self.calls / self.elapsed_s if self.elapsed_s else 0.0

    def show(self) -> str:
        lat = sorted(self.latencies_s)
        p50 = statistics.median(lat) * 1000 if lat else 0.0
        p99 = lat[max(0, int(len(lat) * 0.99) - 1)] * 1000 if lat else 0.0
        per_batch = f", {self.calls / self.batches:,.0f} calls/{self.per_batch}" if self.batches else ""
        return f"{self.per_s:,.0f}/s (p50 {p50:,.0f} ms, p99 {p99:,.0f} ms{per_batch})"


@dataclass
class Result:
    busy: int
    per_day: int
    batch_s: dict[int, float] = field(default_factory=dict)
    finds_per_batch: dict[int, int] = field(default_factory=dict)
    first: Rate = field(default_factory=Rate)
    retry: Rate = field(default_factory=Rate)
    retry_buckets: float = 0.0
    record_sent: Rate = field(default_factory=Rate)

    @property
    def errors(self) -> int:
        return self.first.errors + self.retry.errors + self.record_sent.errors

    def row(self) -> dict[str, str]:
        return {
            "this hour": f"{self.busy:,}",
            "a day": f"{self.per_day:,}",
            **{
                f"batch of {k}": f"{s * 1000:,.0f} ms ({self.finds_per_batch[k]} finds)"
                for k, s in self.batch_s.items()
            },
            "newer_sent, first": self.first.show(),
            "newer_sent, retry": f"{self.retry.show()}, {self.retry_buckets:.1f} buckets/call",
            "record_sent": self.record_sent.show(),
            "errors": str(self.errors),
        }


def key_of(i: int) -> str:
    return code_key(f"user{i}@example.com", "sign-in")


async def prefill(codes: LatestCodes, period: int, users: range, latest_ms: int) -> None:
    """Codes of `users` recorded as `record_sent` records them, issued in the hour of
    `period` up to `latest_ms`."""
    collection = codes.buckets.collection(period)
    start_ms = period * codes.buckets.bucket_s * 1000
    span_ms = max(1, min(latest_ms - start_ms, codes.buckets.bucket_s * 1000))
    for chunk in range(users.start, users.stop, PREFILL_CHUNK):
        docs = []
        for i in range(chunk, min(users.stop, chunk + PREFILL_CHUNK)):
            issued_at_ms = start_ms + (i * 7_919) % span_ms
            docs.append(
                {"_id": f"{key_of(i)}:{issued_at_ms}:old-{i}", "key": key_of(i), "issued_at_ms": issued_at_ms}
            )
        await collection.insert_many(docs, ordered=False)


async def loop_for(concurrency: int, duration_s: float, call: Callable[[int], Awaitable[object]]) -> Rate:
    rate = Rate()
    started = time.monotonic()
    stop_at = started + duration_s
    counter = iter(range(1 << 62))

    async def lane() -> None:
        while time.monotonic() < stop_at:
            began = time.monotonic()
            try:
                await call(next(counter))
            except Exception as error:  # counted and shown; the run goes on
                rate.errors += 1
                if rate.errors <= 3:
                    print(f"  {type(error).__name__}: {error}")
                continue
            rate.calls += 1
            rate.latencies_s.append(time.monotonic() - began)

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    rate.elapsed_s = time.monotonic() - started
    return rate


async def bench_busy(mongo: AsyncMongoClient[Document], busy: int, opts: argparse.Namespace) -> Result:
    database: AsyncDatabase[Document] = mongo[f"bench_{uuid.uuid4().hex[:10]}"]
    batching = BatchSettings(reads_in_flight=opts.reads_in_flight)
    result = Result(busy, opts.per_day)
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    first_hour, last_hour = opts.retry_hours

    def fresh() -> LatestCodes:
        return LatestCodes(
            database, PREFIX, memo_size=0, batching=batching, index_key=not opts.no_index, clock=lambda: now
        )

    try:
        codes = fresh()
        await codes.prepare(now)
        period = codes.buckets.period(now)
        per_hour = opts.per_day // 24
        began = time.monotonic()
        await prefill(codes, period, range(busy), now_ms)
        for hours_ago in range(1, 24):
            users = busy + (hours_ago - 1) * per_hour
            await prefill(codes, period - hours_ago, range(users, users + per_hour), now_ms)
        stored = busy + 23 * per_hour
        print(f"{busy:,} codes this hour, {stored:,} in 24 h, stored in {time.monotonic() - began:.1f}s")

        def any_key() -> str:
            return key_of(random.randrange(2 * stored))  # half of them recorded

        for k in opts.batches:
            times = []
            for _ in range(opts.repeat):
                asking = fresh()
                await asking.prepare(now)
                keys = [any_key() for _ in range(k)]
                began = time.monotonic()
                await asyncio.gather(*(asking.newer_sent(key, now_ms, now) for key in keys))
                times.append(time.monotonic() - began)
                result.finds_per_batch[k] = sum(r.batches for r in asking._readers.values())
                await asking.aclose()
            result.batch_s[k] = statistics.median(times)
            print(f"  batch of {k}: {result.batch_s[k] * 1000:,.0f} ms", flush=True)

        asking = fresh()
        await asking.prepare(now)
        result.first = await loop_for(
            opts.concurrency, opts.duration_s, lambda i: asking.newer_sent(any_key(), now_ms, now)
        )
        result.first.batches = asking._readers[period].batches if period in asking._readers else 0
        await asking.aclose()
        print(f"  newer_sent, first deliveries: {result.first.show()}", flush=True)

        asking = fresh()
        await asking.prepare(now)
        result.retry = await loop_for(
            opts.concurrency,
            opts.duration_s,
            lambda i: asking.newer_sent(
                any_key(), now_ms - int(random.uniform(first_hour, last_hour) * 3_600_000), now
            ),
        )
        reads = sum(r.items for r in asking._readers.values())
        result.retry_buckets = reads / result.retry.calls if result.retry.calls else 0.0
        result.retry.batches = asking._readers[period].batches if period in asking._readers else 0
        await asking.aclose()
        print(f"  newer_sent, retries: {result.retry.show()}", flush=True)

        recording = fresh()
        await recording.prepare(now)
        result.record_sent = await loop_for(
            opts.concurrency,
            opts.duration_s,
            lambda i: recording.record_sent(key_of(2 * stored + i), now_ms, f"new-{i}", now),
        )
        result.record_sent.batches = sum(r.batches for r in recording._inserters.values())
        result.record_sent.per_batch = "insert_many"
        await recording.aclose()
        print(f"  record_sent: {result.record_sent.show()}", flush=True)
    finally:
        await mongo.drop_database(database.name)
    return result


def table(results: list[Result]) -> str:
    rows = [result.row() for result in results]
    heads = list(rows[0])
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(row.get(h, "") for h in heads) + " |" for row in rows]
    return "\n".join(lines)


async def main(opts: argparse.Namespace) -> list[Result]:
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(MONGODB_URL, tz_aware=True, socketTimeoutMS=120_000)
    try:
        await mongo.admin.command("ping")
        results = [await bench_busy(mongo, busy, opts) for busy in opts.busy]
    finally:
        await mongo.close()
    print(
        f"\n{opts.concurrency} callers for {opts.duration_s:g} s per rate, "
        f"{opts.reads_in_flight} find(s) in flight per bucket, key index {'off' if opts.no_index else 'on'}, "
        f"store {MONGODB_URL.rsplit('@', 1)[-1]}\n"
    )
    print(table(results))
    return results


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def _floats(text: str) -> tuple[float, float]:
    low, high = (float(part) for part in text.split(","))
    return low, high


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=_ints, default=[4_200, 10_000], help="codes issued this hour")
    parser.add_argument("--per-day", type=int, default=100_000, help="codes a day, over the past hours")
    parser.add_argument(
        "--retry-hours", type=_floats, default=(1.0, 20.0), help="how long ago retries were issued: LOW,HIGH"
    )
    parser.add_argument("--batches", type=_ints, default=[1, 50, 256], help="keys per newer_sent batch")
    parser.add_argument("--repeat", type=int, default=3, help="batches timed per size (the median shows)")
    parser.add_argument("--concurrency", type=int, default=128, help="callers at once for the rates")
    parser.add_argument("--duration-s", type=float, default=15.0, help="per rate")
    parser.add_argument("--reads-in-flight", type=int, default=BatchSettings().reads_in_flight)
    parser.add_argument("--no-index", action="store_true", help="no index on `key`")
    parser.add_argument("--smoke", action="store_true", help="tiny counts")
    opts = parser.parse_args(argv)
    if opts.smoke:
        opts.busy, opts.per_day, opts.batches, opts.repeat, opts.concurrency, opts.duration_s = (
            [200],
            2_400,
            [1, 50],
            1,
            16,
            1.0,
        )
    return opts


if __name__ == "__main__":
    asyncio.run(main(parse()))
