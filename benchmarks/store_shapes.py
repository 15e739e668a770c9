"""The delivery ledger's store cost per job as history grows: today's shape against the new one.

    .venv/bin/python -m benchmarks.store_shapes                   # 100,000 older jobs, 5,000 new
    .venv/bin/python -m benchmarks.store_shapes --history 0 --jobs 2000 --designs today
    .venv/bin/python -m benchmarks.store_shapes --smoke           # tiny counts, < 60 s

Needs the MongoDB-wire store (`make services`). For each design it makes a fresh
database `bench_<random>`, stores `--history` older, sent jobs the way that design would
have stored them, then runs `--jobs` new jobs with `--inflight` of them at a time, each
doing what the email service does around a send: claim, (`--send-ms` of sending), mark
sent. It reports the jobs/s over the first and the last `--window` jobs, so a cost that
grows with the collection shows as a falling rate, and drops the database.

Designs:

- **today**: the ledger before this change: `insert_one` claim, `update_one({_id})` mark,
  one document per job in one collection that is never emptied.
- **today-bulk**: the same documents, written in bulk by a batcher: `insert_many` claims,
  one `update_many({_id: {$in: [...]}})` for the marks of a batch.
- **buckets**: `processors.email.ledger.DeliveryLedger` as it is now: inserts only, into
  daily buckets, coalesced into `insert_many(ordered=False)` per bucket.

Then, for **buckets** only, the slow paths: `--retries` jobs that fail once and are
retried by the same worker (its memo: inserts only), and the same number of jobs sent
already and delivered again to a fresh worker (no memo: a claim that collides reads the
job's documents; those reads are batched).

A design that cannot finish within `--deadline-s` stops starting jobs and says so; its
rates are over the jobs it did.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from processors.batching import Batcher
from processors.claims import ClaimOutcome
from processors.email.ledger import DeliveryLedger
from processors.errors import TransientError

MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")
LEDGER = "email_deliveries"
LEASE_S = 30.0
PREFILL_CHUNK = 5_000

Document = dict[str, Any]


# ------------------------------------------------------------------------------ the designs


class Today:
    """The ledger's calls before this change (processors/claims.py at cec2ba2): insert_one to
    claim, update_one by `_id` to mark."""

    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self.collection = database[LEDGER]

    async def prepare(self) -> None:
        await self.collection.create_index("job_id", unique=True)
        await self.collection.create_index("status")

    async def prefill(self, count: int, then: datetime) -> None:
        for start in range(0, count, PREFILL_CHUNK):
            docs = [old_entry(i, then) for i in range(start, min(count, start + PREFILL_CHUNK))]
            await self.collection.insert_many(docs, ordered=False)

    async def claim(self, job_id: str, now: datetime) -> int:
        await self.collection.insert_one(new_entry(job_id, now))
        return 1

    async def mark_sent(self, job_id: str, attempt: int, now: datetime) -> None:
        await self.collection.update_one({"_id": job_id}, sent_update(attempt, now))

    async def close(self) -> None:
        return None


class TodayBulk(Today):
    """Today's documents, written in bulk: `insert_many` claims, `update_many($in)` marks."""

    def __init__(self, database: AsyncDatabase[Document]) -> None:
        super().__init__(database)
        self._claims: Batcher[Document, None] = Batcher(self._insert)
        self._marks: Batcher[tuple[str, int, datetime], None] = Batcher(self._mark, max_in_flight=1)

    async def _insert(self, docs: list[Document]) -> list[None]:
        with contextlib.suppress(BulkWriteError):
            await self.collection.insert_many(docs, ordered=False)
        return [None] * len(docs)

    async def _mark(self, marks: list[tuple[str, int, datetime]]) -> list[None]:
        now = max(at for _, _, at in marks)
        await self.collection.update_many({"_id": {"$in": [j for j, _, _ in marks]}}, sent_update(1, now))
        return [None] * len(marks)

    async def claim(self, job_id: str, now: datetime) -> int:
        await self._claims.submit(new_entry(job_id, now))
        return 1

    async def mark_sent(self, job_id: str, attempt: int, now: datetime) -> None:
        await self._marks.submit((job_id, attempt, now))


class Buckets:
    """The ledger as it is now."""

    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self.database = database
        self.ledger = DeliveryLedger(database[LEDGER], lease_s=LEASE_S)

    async def prepare(self) -> None:
        await self.ledger.ensure_indexes()

    async def prefill(self, count: int, then: datetime) -> None:
        """`count` sent jobs of the last hours, stored as the ledger stores them: the claim in
        yesterday's and today's bucket, the completion in today's."""
        claims = self.ledger.claims
        period = claims.buckets.period(datetime.now(UTC))  # today's buckets, whatever the hour
        for start in range(0, count, PREFILL_CHUNK):
            ids = [f"old-{i}" for i in range(start, min(count, start + PREFILL_CHUNK))]
            claim_docs = [
                {
                    "_id": job_id,
                    "job_id": job_id,
                    "kind": "claim",
                    "attempt": 1,
                    "at": then,
                    "lease_until": then + timedelta(seconds=LEASE_S),
                    "insert": {"type": "WELCOME_EMAIL", "recipient": f"{job_id}@example.com"},
                    "fields": {},
                }
                for job_id in ids
            ]
            done_docs = [
                {
                    "_id": f"{job_id}!",
                    "job_id": job_id,
                    "kind": "done",
                    "attempt": 1,
                    "status": "sent",
                    "at": then,
                    "data": {"provider": "resend", "provider_message_id": str(uuid.uuid4()), "sent_at": then},
                    "note": {},
                }
                for job_id in ids
            ]
            await claims.buckets.collection(period - 1).insert_many(claim_docs, ordered=False)
            await claims.buckets.collection(period).insert_many([*claim_docs, *done_docs], ordered=False)

    async def claim(self, job_id: str, now: datetime) -> int:
        claim = await self.ledger.claim(
            job_id=job_id, email_type="WELCOME_EMAIL", recipient="a@example.com", now=now
        )
        if claim.outcome is ClaimOutcome.ALREADY_DONE:
            return 0
        return claim.attempt

    async def mark_sent(self, job_id: str, attempt: int, now: datetime) -> None:
        await self.ledger.mark_sent(
            job_id=job_id, attempt=attempt, provider="resend", provider_message_id=f"m-{job_id}", now=now
        )

    async def fail(self, job_id: str, attempt: int, now: datetime) -> None:
        await self.ledger.mark_failed(
            job_id=job_id, attempt=attempt, error_class="Resend503", permanent=False, now=now
        )

    async def close(self) -> None:
        await self.ledger.aclose()


DESIGNS: dict[str, Callable[[AsyncDatabase[Document]], Today | Buckets]] = {
    "today": Today,
    "today-bulk": TodayBulk,
    "buckets": Buckets,
}


def old_entry(i: int, then: datetime) -> Document:
    return {
        "_id": f"old-{i}",
        "job_id": f"old-{i}",
        "type": "WELCOME_EMAIL",
        "recipient": f"old{i % 5000}@example.com",
        "status": "sent",
        "attempts": 1,
        "provider": "resend",
        "provider_message_id": str(uuid.UUID(int=i)),
        "created_at": then,
        "updated_at": then,
        "sent_at": then,
        "history": [{"attempt": 1, "at": then, "outcome": "sent"}],
    }


def new_entry(job_id: str, now: datetime) -> Document:
    return {
        "_id": job_id,
        "job_id": job_id,
        "type": "WELCOME_EMAIL",
        "recipient": "a@example.com",
        "history": [],
        "status": "sending",
        "attempts": 1,
        "lease_until": now + timedelta(seconds=LEASE_S),
        "created_at": now,
        "updated_at": now,
    }


def sent_update(attempt: int, now: datetime) -> Document:
    return {
        "$set": {"status": "sent", "provider": "resend", "sent_at": now, "updated_at": now},
        "$unset": {"lease_until": ""},
        "$push": {"history": {"attempt": attempt, "at": now, "outcome": "sent"}},
    }


# ------------------------------------------------------------------------------ running


@dataclass
class Run:
    label: str
    planned: int
    done_at: list[float] = field(default_factory=list)  # monotonic completion times
    latencies_s: list[float] = field(default_factory=list)
    started_s: float = 0.0
    stopped_early: bool = False
    errors: int = 0
    note: str = ""

    def rate(self, jobs: list[float], since: float) -> float:
        return len(jobs) / max(1e-9, jobs[-1] - since) if jobs else 0.0

    def summary(self, window: int) -> dict[str, str]:
        done = self.done_at
        w = min(window, len(done) // 2) or len(done)
        first = self.rate(done[:w], self.started_s)
        last = self.rate(done[-w:], done[-w - 1] if len(done) > w else self.started_s)
        overall = self.rate(done, self.started_s)
        lat = sorted(self.latencies_s)
        p50 = statistics.median(lat) * 1000 if lat else 0.0
        p99 = lat[int(len(lat) * 0.99) - 1] * 1000 if len(lat) >= 100 else (lat[-1] * 1000 if lat else 0.0)
        return {
            "run": self.label,
            "jobs": f"{len(done):,}/{self.planned:,}" + (" (deadline)" if self.stopped_early else ""),
            "first jobs": f"{first:,.1f}/s ({w:,})",
            "last jobs": f"{last:,.1f}/s ({w:,})",
            "overall": f"{overall:,.1f}/s",
            "p50 / p99 per job": f"{p50:,.0f} / {p99:,.0f} ms",
            "errors": str(self.errors),
            "note": self.note,
        }


async def run_jobs(
    label: str,
    job_ids: Iterable[str],
    planned: int,
    inflight: int,
    deadline_s: float,
    work: Callable[[str], Awaitable[None]],
) -> Run:
    run = Run(label, planned)
    ids = iter(job_ids)
    run.started_s = time.monotonic()
    stop_at = run.started_s + deadline_s

    async def lane() -> None:
        for job_id in ids:
            if time.monotonic() > stop_at:
                run.stopped_early = True
                return
            began = time.monotonic()
            try:
                await work(job_id)
            except Exception as error:  # counted and shown; the run goes on
                run.errors += 1
                if run.errors <= 3:
                    print(f"  {label}: {job_id}: {type(error).__name__}: {error}")
                continue
            ended = time.monotonic()
            run.done_at.append(ended)
            run.latencies_s.append(ended - began)

    await asyncio.gather(*(lane() for _ in range(inflight)))
    return run


async def bench_design(mongo: AsyncMongoClient[Document], name: str, opts: argparse.Namespace) -> list[Run]:
    database = mongo[f"bench_{uuid.uuid4().hex[:10]}"]
    design = DESIGNS[name](database)
    now = datetime.now(UTC)
    runs: list[Run] = []
    try:
        await design.prepare()
        began = time.monotonic()
        await design.prefill(opts.history, now - timedelta(hours=2))
        print(f"{name}: {opts.history:,} older jobs stored in {time.monotonic() - began:.1f}s", flush=True)

        async def send_once(job_id: str) -> None:
            attempt = await design.claim(job_id, datetime.now(UTC))
            if opts.send_ms:
                await asyncio.sleep(opts.send_ms / 1000)
            await design.mark_sent(job_id, attempt, datetime.now(UTC))

        label = f"{name}, {opts.history:,} older jobs"
        run = await run_jobs(
            label,
            (f"new-{i}" for i in range(opts.jobs)),
            opts.jobs,
            opts.inflight,
            opts.deadline_s,
            send_once,
        )
        if isinstance(design, Buckets):
            run.note = f"{design.ledger.claims.loads} reads"
        runs.append(run)
        print(_line(run.summary(opts.window)), flush=True)
        if isinstance(design, Buckets) and opts.retries:
            runs += await bench_slow_paths(design, database, opts)
    finally:
        await design.close()
        await mongo.drop_database(database.name)
    return runs


async def bench_slow_paths(
    design: Buckets, database: AsyncDatabase[Document], opts: argparse.Namespace
) -> list[Run]:
    count = opts.retries

    async def fail_then_send(job_id: str) -> None:
        attempt = await design.claim(job_id, datetime.now(UTC))
        await design.fail(job_id, attempt, datetime.now(UTC))
        again = await design.claim(job_id, datetime.now(UTC))
        await design.mark_sent(job_id, again, datetime.now(UTC))

    loads_before = design.ledger.claims.loads
    retried = await run_jobs(
        "buckets: fail once, retry (same worker)",
        (f"retry-{i}" for i in range(count)),
        count,
        opts.inflight,
        opts.deadline_s,
        fail_then_send,
    )
    retried.note = f"{design.ledger.claims.loads - loads_before} reads"
    print(_line(retried.summary(opts.window)), flush=True)

    fresh = Buckets(database)  # a restarted worker: nothing in memory

    async def redelivered(job_id: str) -> None:
        claim = await fresh.ledger.claim(
            job_id=job_id, email_type="WELCOME_EMAIL", recipient="a@example.com", now=datetime.now(UTC)
        )
        if claim.outcome is not ClaimOutcome.ALREADY_DONE:
            raise TransientError(f"{job_id} was sent already but claimed again")

    again = await run_jobs(
        "buckets: redelivered after a restart (no memo)",
        (f"new-{i}" for i in range(count)),
        count,
        opts.inflight,
        opts.deadline_s,
        redelivered,
    )
    claims = fresh.ledger.claims
    again.note = f"{claims.loads} reads in {sum(r.batches for r in claims._readers.values())} batched finds"
    await fresh.close()
    print(_line(again.summary(opts.window)), flush=True)
    return [retried, again]


def _line(summary: dict[str, str]) -> str:
    return "  " + "  ".join(f"{k}: {v}" for k, v in summary.items() if v)


def table(runs: list[Run], window: int) -> str:
    rows = [run.summary(window) for run in runs]
    heads = list(rows[0])
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(row[h] for h in heads) + " |" for row in rows]
    return "\n".join(lines)


async def main(opts: argparse.Namespace) -> None:
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(MONGODB_URL, tz_aware=True)
    try:
        await mongo.admin.command("ping")
        runs: list[Run] = []
        for name in opts.designs.split(","):
            runs += await bench_design(mongo, name.strip(), opts)
    finally:
        await mongo.close()
    print(
        f"\n{opts.jobs:,} jobs, {opts.inflight} in flight, send {opts.send_ms} ms, "
        f"store {MONGODB_URL.rsplit('@', 1)[-1]}\n"
    )
    print(table(runs, opts.window))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=100_000, help="older jobs stored before the run")
    parser.add_argument("--jobs", type=int, default=5_000)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--send-ms", type=float, default=0.0, help="time each job spends sending")
    parser.add_argument("--window", type=int, default=500, help="jobs in the first and last window")
    parser.add_argument("--retries", type=int, default=1_000, help="jobs for each slow path (buckets)")
    parser.add_argument("--deadline-s", type=float, default=180.0, help="per run")
    parser.add_argument("--designs", default="today,today-bulk,buckets")
    parser.add_argument("--smoke", action="store_true", help="tiny counts")
    opts = parser.parse_args(argv)
    if opts.smoke:
        opts.history, opts.jobs, opts.window, opts.retries, opts.deadline_s = 1_000, 300, 50, 100, 20.0
    return opts


if __name__ == "__main__":
    asyncio.run(main(parse()))
