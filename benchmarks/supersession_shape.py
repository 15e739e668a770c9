"""The supersession store's calls at their real size: one `newer_sent` batch, and the rates
of `newer_sent` and `record_sent` with many callers at once.

    .venv/bin/python -m benchmarks.supersession_shape                  # buckets of 20,000 and 100,000
    .venv/bin/python -m benchmarks.supersession_shape --sizes 4000 --both-buckets
    .venv/bin/python -m benchmarks.supersession_shape --smoke          # tiny counts, a few seconds

Needs the MongoDB-wire store (`make services`). For each size it makes a fresh database
`bench_<random>` and fills today's bucket with that many recorded codes (`insert_many` in
chunks); with `--both-buckets` yesterday's too, as in the steady state of that many codes
a day. Then, with `processors.email.supersession.LatestCodes`:

- **batch of k**: k concurrent `newer_sent` calls from a process with nothing in memory,
  which become one `find($in)` per bucket; the time until all k are answered (median
  of `--repeat`). Half the keys have a record, all older than asked: every call reads.
- **newer_sent rate**: `--concurrency` callers asking in a loop for `--duration-s`, every
  call answered by the store (the memo only ever proves "yes").
- **record_sent rate**: the same callers recording new codes (run last: it grows the bucket).

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
from datetime import UTC, datetime, timedelta
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
    size: int
    both_buckets: bool
    batch_s: dict[int, float] = field(default_factory=dict)
    finds_per_batch: dict[int, int] = field(default_factory=dict)
    newer_sent: Rate = field(default_factory=Rate)
    record_sent: Rate = field(default_factory=Rate)

    @property
    def errors(self) -> int:
        return self.newer_sent.errors + self.record_sent.errors

    def row(self) -> dict[str, str]:
        stored = f"{self.size:,}" + (" x 2 buckets" if self.both_buckets else "")
        return {
            "codes stored": stored,
            **{
                f"batch of {k}": f"{s * 1000:,.0f} ms ({self.finds_per_batch[k]} finds)"
                for k, s in self.batch_s.items()
            },
            "newer_sent": self.newer_sent.show(),
            "record_sent": self.record_sent.show(),
            "errors": str(self.errors),
        }


def key_of(i: int) -> str:
    return code_key(f"user{i}@example.com", "sign-in")


async def prefill(codes: LatestCodes, period: int, count: int, issued_at_ms: int) -> None:
    """`count` codes recorded as `record_sent` records them, for the users 0..count-1."""
    collection = codes.buckets.collection(period)
    for start in range(0, count, PREFILL_CHUNK):
        docs = [
            {"_id": f"{key_of(i)}:{issued_at_ms}:old-{i}", "key": key_of(i), "issued_at_ms": issued_at_ms}
            for i in range(start, min(count, start + PREFILL_CHUNK))
        ]
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


async def bench_size(mongo: AsyncMongoClient[Document], size: int, opts: argparse.Namespace) -> Result:
    database: AsyncDatabase[Document] = mongo[f"bench_{uuid.uuid4().hex[:10]}"]
    batching = BatchSettings(reads_in_flight=opts.reads_in_flight)
    result = Result(size, opts.both_buckets)
    now = datetime.now(UTC)
    issued_ms = int((now - timedelta(minutes=5)).timestamp() * 1000)
    asked_ms = issued_ms + 1  # newer than every record: every answer is "no", from the store

    def fresh() -> LatestCodes:
        return LatestCodes(database, PREFIX, batching=batching, index_key=not opts.no_index)

    try:
        codes = fresh()
        await codes.prepare(now)
        period = codes.buckets.period(now)
        began = time.monotonic()
        await prefill(codes, period, size, issued_ms)
        if opts.both_buckets:
            await prefill(codes, period - 1, size, issued_ms)
        print(f"{size:,} codes stored in {time.monotonic() - began:.1f}s", flush=True)

        for k in opts.batches:
            times = []
            for _ in range(opts.repeat):
                asking = fresh()
                await asking.prepare(now)
                keys = [key_of(random.randrange(2 * size)) for _ in range(k)]  # half of them recorded
                began = time.monotonic()
                await asyncio.gather(*(asking.newer_sent(key, asked_ms, now) for key in keys))
                times.append(time.monotonic() - began)
                result.finds_per_batch[k] = sum(r.batches for r in asking._readers.values())
                await asking.aclose()
            result.batch_s[k] = statistics.median(times)
            print(f"  batch of {k}: {result.batch_s[k] * 1000:,.0f} ms", flush=True)

        asking = fresh()
        result.newer_sent = await loop_for(
            opts.concurrency,
            opts.duration_s,
            lambda i: asking.newer_sent(key_of(random.randrange(2 * size)), asked_ms, datetime.now(UTC)),
        )
        result.newer_sent.batches = max((r.batches for r in asking._readers.values()), default=0)
        await asking.aclose()
        print(f"  newer_sent, {opts.concurrency} callers: {result.newer_sent.show()}", flush=True)

        recording = fresh()
        result.record_sent = await loop_for(
            opts.concurrency,
            opts.duration_s,
            lambda i: recording.record_sent(key_of(size + i), asked_ms, f"new-{i}", datetime.now(UTC)),
        )
        result.record_sent.batches = sum(r.batches for r in recording._inserters.values())
        result.record_sent.per_batch = "insert_many"
        await recording.aclose()
        print(f"  record_sent, {opts.concurrency} callers: {result.record_sent.show()}", flush=True)
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
        results = [await bench_size(mongo, size, opts) for size in opts.sizes]
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


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=_ints, default=[20_000, 100_000], help="codes stored per bucket")
    parser.add_argument("--both-buckets", action="store_true", help="fill yesterday's bucket too")
    parser.add_argument("--batches", type=_ints, default=[1, 50, 256], help="keys per newer_sent batch")
    parser.add_argument("--repeat", type=int, default=3, help="batches timed per size (the median shows)")
    parser.add_argument("--concurrency", type=int, default=128, help="callers at once for the rates")
    parser.add_argument("--duration-s", type=float, default=15.0, help="per rate")
    parser.add_argument("--reads-in-flight", type=int, default=BatchSettings().reads_in_flight)
    parser.add_argument("--no-index", action="store_true", help="no index on `key`")
    parser.add_argument("--smoke", action="store_true", help="tiny counts")
    opts = parser.parse_args(argv)
    if opts.smoke:
        opts.sizes, opts.batches, opts.repeat, opts.concurrency, opts.duration_s = (
            [1_000],
            [1, 50],
            1,
            16,
            1.0,
        )
    return opts


if __name__ == "__main__":
    asyncio.run(main(parse()))
