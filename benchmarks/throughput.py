"""Email throughput: the worker against a hand-written aiokafka loop, on the same servers.

    make bench                                            # every scenario, ~22 min on 2 cores
    .venv/bin/python -m benchmarks.throughput --smoke     # tiny counts, < 60 s (CI runs it)
    .venv/bin/python -m benchmarks.throughput --list      # the scenarios and their settings
    .venv/bin/python -m benchmarks.throughput --scenarios keys-200ms,one-key-200ms --jobs 500
    .venv/bin/python -m benchmarks.throughput --scenarios limited-2rps,limited-2rps-3p,batch-chaos

Needs `make services`. For each scenario and side it makes a fresh topic prefix, consumer
group and database, pre-publishes the jobs with one idempotent producer, then starts the
consumer and times it at a local fake Resend (tests/fakes/resend_server.py, with the
scenario's latency):

- **worker**: the real command, `faststream run streams.app:app`, in a subprocess, set up
  only through environment variables (EMAIL_CONCURRENCY from the scenario,
  RESEND_RATE_LIMIT_PER_S=1000 unless the scenario is limited; a worker that does not know
  a variable ignores it);
- **loop**: a baseline that does the same work per job in one aiokafka loop (this file,
  run as `python -m benchmarks.throughput _loop ...`): claim the job in the store's
  ledger (a document with `_id` = job_id and status `sending`), render the same Jinja2
  template, POST it to the fake with an `Idempotency-Key` through one pooled httpx
  client, mark it sent, commit offsets. It keeps 50 jobs in flight and sends one at a time
  per key (so one recipient's emails stay in order), writes claims with `insert_many` and
  marks with one `update_many({_id: {$in: [...]}})` per batch, commits per partition only
  up to the lowest job not yet finished, and on a rebalance drops the jobs that have not
  started sending and finishes the others before it lets go of a partition.

Each side stops when every job has been sent or at its deadline. The report has, per
side: emails/s from the first to the last send at the provider; the flow rate, sends/s from
the first send to the one completing 99 % of the jobs (what a hangs scenario compares with
its reference run without hangs: its hung jobs arrive late by design, so the last send
measures their timeout, not the stream); the worker/loop ratio;
p50/p99 from publish to send (the publish time rides in the job_id; with a pre-published
backlog this is mostly time spent waiting in the topic); the consumer's peak RSS; the
CPU seconds of the consumer, the Kafka broker, FerretDB and this process (the fake
provider) over the sending window, and how busy that kept the machine's cores.

The provider's rate limit has scenarios of its own, **worker only** (the loop has no
budget, so it has no side in them): the fake refuses any request beyond 2 in a rolling
second (429 with `retry-after`) and the worker runs with RESEND_RATE_LIMIT_PER_S=2, one
budget for all its processes, sending the jobs that wait for a slot in batches:

- `limited-2rps`: 1 process, 50 ms latency, RESEND_BATCH_MAX=100, EMAIL_CONCURRENCY=128
  (the default; a process needs ~100 jobs waiting at each of its slots to fill a batch), 4,000 jobs of
  one key each (the jobs of one key go one at a time). Goal ≥ 190 emails/s (95 % of
  2 x 100), or, where `nolimit-50ms` (the same jobs with no limit, run just before it)
  shows the stack cannot reach 200/s on this machine, ≥ 95 % of that cap, shown;
- `limited-2rps-3p`: the same with 3 processes, ≥ 180 emails/s in total; the jobs are
  published once the three have joined and shared the partitions out (a burst reaching
  running workers); `limited-2rps-3p-cold` publishes them before the processes start, so
  the first to join drains alone until the others come, the partitions drain unevenly and
  a drained partition's slots go unused;
- for both: ≤ 2 % of requests answered 429, no second with more than 2 requests accepted,
  nothing sent twice (by content), no record in the email DLQ;
- `batch-chaos`: 2 processes, batches of 10, RESEND_TIMEOUT_S=2, quick email retries, 5 %
  of batch calls answered only after 2.5 s, a `kill -9` of one process every 10 s for a
  minute (in turn, each restarted at once), then every job waited for: 0 lost, 0 sent twice.

Their table adds the requests, the 429s and their share, the most requests accepted (and
arrived) in any second, the mean batch, calls by size, duplicates by content, dead letters,
lost jobs, kills, hung calls and the goal's verdict (item by item in the notes). The smoke
has a 200-job `limited-2rps`, so CI goes through the budget path.

Every side is checked at the fake by content: each job is delivered exactly once (counted
by the token in its subject and by idempotency key); a job whose offset was committed is
never missing (unless it waits in the retry topic); with one key, emails arrive in publish
order. A failed check is printed loudly and makes the exit status non-zero.

Results go to benchmarks/results/throughput.md (table), throughput.png (emails/s against
concurrency) and throughput.json (every figure, to compare runs); `--out STEM` writes
elsewhere (`--smoke` defaults to throughput-smoke.*). The servers are the ones at
KAFKA_BOOTSTRAP_SERVERS / MONGODB_URL (default: the local ones); the worker is this
checkout's, or the one in `--worker-dir` / $THROUGHPUT_WORKER_DIR (say, a `git archive`
of another commit, to compare).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import logging
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import httpx
import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs in the dev set
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from jinja2 import BaseLoader, DictLoader, Environment, FileSystemLoader, StrictUndefined
from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError, PyMongoError

from tests.fakes.resend_server import Delivery, FakeResend, Request

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")
PARTITIONS = 3
EMAIL_FROM = "Acme <no-reply@example.com>"
PRODUCT_NAME = "Acme"
API_KEY = "re_bench_key"
LEDGER = "email_deliveries"
LEASE_S = 30.0
RATE_LIMIT_PER_S = 1000
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "throughput"
# The worker's subject is "Welcome to Acme, <name>": the name carries the job's number.
TOKEN = re.compile(r"Reader n(\d{7})")
SAMPLE_EVERY_S = 0.2
MARKS = {
    "in": "one `update_many({_id: {$in: [...]}})` per batch",
    "each": "one `update_one({_id: ...})` per job, concurrently",
    "insert": "one `insert_many` of marker documents per batch into a second collection",
}
SETTLE_S = 0.5
FLOW_SHARE = 0.99  # the flow rate runs from the first send to the one completing this share of jobs
STALL_NOTE_S = 1.0  # a gap between sends this long, within the flow window, gets a note

log = logging.getLogger("throughput")


# ------------------------------------------------------------------------------ scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    latency_ms: int
    keys: int  # distinct recipients; the Kafka key is the recipient
    jobs: int
    processes: int = 1
    sweep: bool = False  # the worker at every --concurrency value, not only the largest
    hang_every: int = 0  # 1 send in N hangs past RESEND_TIMEOUT_S (see `hung_seqs`, run_side)
    reference: str | None = None  # the same run without hangs, for the ratio
    history_docs: int = 0  # older documents in the ledger before the run
    window: int = 0  # report the rate over the first and the last `window` sends
    deadline_s: float = 30.0  # per side, from the consumer's start
    # The provider's rate budget (worker side only: the loop has no budget).
    rate_limit: int | None = None  # the fake's limit per rolling second = RESEND_RATE_LIMIT_PER_S
    batch_max: int | None = None  # RESEND_BATCH_MAX (the worker's default when None)
    concurrency: int | None = None  # EMAIL_CONCURRENCY, whatever --concurrency says
    resend_timeout_s: float | None = None  # RESEND_TIMEOUT_S, whatever --resend-timeout-s says
    worker_env: tuple[tuple[str, str], ...] = ()  # more of the worker's variables
    hang_batches: float = 0.0  # this share of batch calls is held past RESEND_TIMEOUT_S
    kill_every_s: float = 0.0  # kill -9 a worker process this often, in turn, restarting it at once
    kills: int = 0  # how many kills, from the first send on
    goal_per_s: float | None = None  # emails/s the worker must reach (the issue's goal)
    cap_reference: str | None = None  # the same jobs without a limit: what the stack reaches here
    worker_only: bool = False  # no loop side (the loop has no rate budget)
    # Publish once every process has joined and the partitions are shared out: a burst
    # reaching running workers (else the first process to join drains alone for a while).
    burst_after_join: bool = False

    @property
    def ordered(self) -> bool:
        return self.keys == 1

    @property
    def limited(self) -> bool:
        return self.rate_limit is not None

    def timeout_s(self, cfg: Config) -> float:
        return self.resend_timeout_s or cfg.resend_timeout_s

    def hung_seqs(self) -> list[int]:
        """One job in each block of `hang_every`, a step further into the block each time, so
        the hung jobs fall on different keys (every 100th of 1000 keys would put them all on
        10 recipients, whose per-key order would chain their timeouts one after another)."""
        n = self.hang_every
        if not n:
            return []
        return [block + (n // 2 + i) % n for i, block in enumerate(range(0, self.jobs - n + 1, n))]

    def describe(self) -> str:
        parts = [
            f"{self.jobs} jobs",
            "1 key" if self.keys == 1 else f"{self.keys} keys",
            f"{PARTITIONS} partitions",
            f"provider latency {self.latency_ms} ms",
            f"{self.processes} process{'es' if self.processes > 1 else ''}",
        ]
        if self.hang_every:
            parts.append(f"{100 / self.hang_every:g} % of sends hang past the timeout")
        if self.history_docs:
            parts.append(f"{self.history_docs:,} older ledger documents")
        if self.limited:
            parts.append(f"provider limited to {self.rate_limit} req/s = RESEND_RATE_LIMIT_PER_S")
        elif self.worker_only:
            parts.append(f"no provider limit (RESEND_RATE_LIMIT_PER_S={RATE_LIMIT_PER_S})")
        if self.batch_max:
            parts.append(f"RESEND_BATCH_MAX={self.batch_max}")
        if self.concurrency:
            parts.append(f"EMAIL_CONCURRENCY={self.concurrency}")
        if self.resend_timeout_s:
            parts.append(f"RESEND_TIMEOUT_S={self.resend_timeout_s:g}")
        parts += [f"{name}={value}" for name, value in self.worker_env]
        if self.hang_batches:
            parts.append(f"{100 * self.hang_batches:g} % of batch calls held past the timeout")
        if self.kills:
            parts.append(f"kill -9 of a worker every {self.kill_every_s:g} s, {self.kills} times")
        if self.goal_per_s:
            parts.append(f"goal ≥ {self.goal_per_s:g} emails/s")
        if self.worker_only:
            parts.append("worker only")
        if self.sweep:
            parts.append("worker at every --concurrency")
        parts.append(f"deadline {self.deadline_s:g} s per side")
        return ", ".join(parts)


# The provider's rate limit (worker only: the loop has no budget). A budget of 2 requests a
# second for the group, batches of up to 100 while jobs wait: 200 emails/s at most. A process
# needs ~100 jobs waiting at each of its slots to fill a batch: EMAIL_CONCURRENCY=128 (the
# default) does, with one key per job (the jobs of one key go one at a time).
LIMIT_PER_S = 2
BATCH_MAX = 100
BUDGET_CONCURRENCY = 128  # the worker default: about 100 jobs wait at each of its slots
GOAL_SHARE = 0.95  # of limit x batch, or of the stack's cap on the machine when that is lower
MAX_429_SHARE = 0.02
SLOT_SPAN = 1.02  # the worker's slots are 1.02 / RESEND_RATE_LIMIT_PER_S s long (README)
CHAOS_ENV = (
    ("EMAIL_SEND_LEASE_S", "4"),
    ("EMAIL_RETRY_BASE_MS", "500"),
    ("EMAIL_RETRY_CAP_MS", "4000"),
    ("EMAIL_RETRY_MAX_ATTEMPTS", "30"),
)


def budget_scenario(name: str, *, jobs: int, processes: int = 1, **more: Any) -> Scenario:
    """A worker-only run at LIMIT_PER_S requests a second, batches of BATCH_MAX, 50 ms latency."""
    settings: dict[str, Any] = {
        "latency_ms": 50,
        "keys": jobs,  # one key per job
        "rate_limit": LIMIT_PER_S,
        "batch_max": BATCH_MAX,
        "concurrency": BUDGET_CONCURRENCY,
        "worker_only": True,
    }
    return Scenario(name, jobs=jobs, processes=processes, **(settings | more))


BUDGET = (
    # The same jobs with no limit (RESEND_RATE_LIMIT_PER_S=1000 and none at the fake): what
    # the whole stack reaches on this machine, the cap limited-2rps is held to when it is
    # below limit x batch.
    budget_scenario("nolimit-50ms", jobs=4000, rate_limit=None, batch_max=None, deadline_s=90.0),
    budget_scenario(
        "limited-2rps",
        jobs=4000,
        goal_per_s=GOAL_SHARE * LIMIT_PER_S * BATCH_MAX,
        cap_reference="nolimit-50ms",
        deadline_s=120.0,
    ),
    budget_scenario(
        "limited-2rps-3p", jobs=4000, processes=3, goal_per_s=180.0, deadline_s=120.0, burst_after_join=True
    ),
    # The same, with the jobs already waiting when the processes start, one after another.
    budget_scenario("limited-2rps-3p-cold", jobs=4000, processes=3, goal_per_s=180.0, deadline_s=120.0),
    # Batches of 10 at 2 calls a second: ~100 s of sending, past the minute of kills.
    budget_scenario(
        "batch-chaos",
        jobs=2000,
        processes=2,
        keys=1000,
        batch_max=10,
        concurrency=64,
        resend_timeout_s=2.0,
        worker_env=CHAOS_ENV,
        hang_batches=0.05,
        kill_every_s=10.0,
        kills=6,
        deadline_s=360.0,
    ),
)
FULL = (
    Scenario("keys-0ms", latency_ms=0, keys=1000, jobs=3000, sweep=True),
    Scenario("keys-200ms", latency_ms=200, keys=1000, jobs=3000, sweep=True),
    Scenario("one-key-0ms", latency_ms=0, keys=1, jobs=500),
    Scenario("one-key-200ms", latency_ms=200, keys=1, jobs=100),
    Scenario("keys-0ms-2p", latency_ms=0, keys=1000, jobs=3000, processes=2),
    Scenario("keys-200ms-2p", latency_ms=200, keys=1000, jobs=3000, processes=2),
    Scenario("one-key-200ms-2p", latency_ms=200, keys=1, jobs=100, processes=2),
    # The hangs run and its reference without hangs: long enough (~25 s of sending) that the
    # steady flow, not the start or the hung jobs' late arrival, makes the flow rate.
    Scenario("keys-200ms-6k", latency_ms=200, keys=1000, jobs=6000, deadline_s=60.0),
    Scenario(
        "hangs-200ms",
        latency_ms=200,
        keys=1000,
        jobs=6000,
        hang_every=100,
        reference="keys-200ms-6k",
        deadline_s=60.0,
    ),
    Scenario(
        "history-0ms",
        latency_ms=0,
        keys=1000,
        jobs=5000,
        history_docs=100_000,
        window=1000,
        deadline_s=45.0,
    ),
    *BUDGET,
)
SMOKE = (
    Scenario("keys-0ms", latency_ms=0, keys=10, jobs=40, deadline_s=20.0),
    Scenario("one-key-50ms-2p", latency_ms=50, keys=1, jobs=10, processes=2, deadline_s=20.0),
    Scenario(
        "hangs-0ms", latency_ms=0, keys=10, jobs=40, hang_every=20, reference="keys-0ms", deadline_s=20.0
    ),
    Scenario("history-0ms", latency_ms=0, keys=10, jobs=60, history_docs=2000, window=20, deadline_s=20.0),
    # The budget path: every request in a slot, batches, no second over the limit.
    budget_scenario("limited-2rps", jobs=200, deadline_s=20.0),
)


@dataclass(frozen=True)
class Config:
    scenarios: tuple[Scenario, ...]
    concurrency: tuple[int, ...]
    loop_inflight: int
    loop_marks: str
    sides: tuple[str, ...]
    resend_timeout_s: float
    worker_dir: Path
    worker_label: str
    templates: Path | None
    out: Path
    keep_logs: bool
    command: str
    smoke: bool


# ------------------------------------------------------------------------------ jobs


@dataclass(frozen=True)
class Job:
    seq: int
    job_id: str
    recipient: str
    partition: int = -1
    offset: int = -1


def make_job(tag: str, seq: int, keys: int) -> tuple[Job, bytes]:
    """A WELCOME_EMAIL job. Its job_id carries the publish time; its name carries `seq`."""
    recipient = "one@example.com" if keys == 1 else f"user{seq % keys}@example.com"
    job_id = f"{tag}-{seq}-{time.time_ns() // 1000}"
    value = {"type": "WELCOME_EMAIL", "job_id": job_id, "to": recipient, "name": f"Reader n{seq:07d}"}
    return Job(seq, job_id, recipient), json.dumps(value).encode()


def published_s(job_id: str) -> float:
    return int(job_id.rsplit("-", 1)[1]) / 1e6


async def publish(topic: str, tag: str, scenario: Scenario) -> list[Job]:
    producer = AIOKafkaProducer(
        bootstrap_servers=KAFKA, enable_idempotence=True, acks="all", linger_ms=10, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        jobs: list[Job] = []
        pending = []
        for seq in range(scenario.jobs):
            job, value = make_job(tag, seq, scenario.keys)
            jobs.append(job)
            pending.append(await producer.send(topic, value, key=job.recipient.encode()))
        metadata = await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return [
        replace(job, partition=m.partition, offset=m.offset) for job, m in zip(jobs, metadata, strict=True)
    ]


# ------------------------------------------------------------------------------ servers


async def check_servers() -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=10_000)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGODB_URL, serverSelectionTimeoutMS=10_000)
    try:
        await admin.start()
        await admin.list_topics()
        await mongo.admin.command("ping")
    except Exception as error:
        raise SystemExit(
            f"servers not reachable at {KAFKA} / {MONGODB_URL} ({type(error).__name__}); "
            "start them with `make services`"
        ) from None
    finally:
        await admin.close()
        await mongo.close()


async def create_topic(name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()


async def delete_topics(prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def committed_offsets(group: str, topic: str) -> dict[int, int]:
    """Per partition, the group's committed offset (0 where it committed none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await admin.close()
    out = {}
    for tp in tps:
        meta = committed.get(tp)
        out[tp.partition] = meta.offset if meta is not None and meta.offset >= 0 else 0
    return out


async def job_ids_in(topic: str) -> list[str]:
    """The job_id of every record in `topic` (the worker's retry and dead-letter topics), one
    per record ("" where the record holds none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        ids: list[str] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in tps]
            if all(position >= end[tp] for position, tp in zip(positions, tps, strict=True)):
                break
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    job_id = ""
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        job_id = str(json.loads(record.value)["job_id"])
                    ids.append(job_id)
        return ids
    finally:
        await consumer.stop()


async def prefill_history(database: str, count: int) -> None:
    """`count` older, sent jobs in the ledger: in the worker's daily buckets (what it reads)
    and in the loop's single collection (the shape the loop writes)."""
    from benchmarks.store_shapes import Buckets, Today

    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGODB_URL, tz_aware=True)
    try:
        await Buckets(mongo[database]).prefill(count, datetime.now(UTC) - timedelta(hours=3))
        await Today(mongo[database]).prefill(count, datetime.now(UTC) - timedelta(days=3))
    finally:
        await mongo.close()


async def drop_database(name: str) -> None:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGODB_URL)
    try:
        await mongo.drop_database(name)
    finally:
        await mongo.close()


def service_processes() -> dict[str, psutil.Process]:
    """The broker and the store: whoever listens on their ports, else .services/run/*.pid."""
    found = {}
    kafka_port = int(KAFKA.split(",")[0].rsplit(":", 1)[1])
    store_port = urlsplit(MONGODB_URL.split(",")[0]).port or 27017
    for label, port, pidfile in (
        ("kafka", kafka_port, "kafka.pid"),
        ("ferretdb", store_port, "ferretdb.pid"),
    ):
        with contextlib.suppress(psutil.Error, OSError):
            for conn in psutil.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                    found[label] = psutil.Process(conn.pid)
                    break
        if label not in found:
            with contextlib.suppress(OSError, ValueError, psutil.Error):
                pid = int((REPO_ROOT / ".services" / "run" / pidfile).read_text().strip())
                found[label] = psutil.Process(pid)
    return found


# ------------------------------------------------------------------------------ sampling


class Sampler:
    """CPU seconds (user + system) and RSS of process groups over time.

    The consumers' children count with them; this process's children (the consumers) do not.
    A process that has ended (a worker killed and restarted) keeps counting with its last
    sample, so a group's CPU seconds never go down.
    """

    def __init__(self, groups: dict[str, list[psutil.Process]]) -> None:
        self._groups = groups
        self._self = psutil.Process().pid
        self._cpu: dict[int, float] = {}
        self._members: dict[str, set[int]] = defaultdict(set)  # every pid ever seen, per group
        self.series: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.peak_rss: dict[str, float] = defaultdict(float)  # the largest single process, MiB

    def add(self, label: str, process: psutil.Process) -> None:
        """A process joins `label` (a restarted worker)."""
        self._groups.setdefault(label, []).append(process)

    def sample(self) -> None:
        now = time.time()
        for label, roots in self._groups.items():
            members = self._members[label]
            for root in roots:
                for process in [root] if root.pid == self._self else self._tree(root):
                    with contextlib.suppress(psutil.Error):
                        times = process.cpu_times()
                        self._cpu[process.pid] = times.user + times.system
                        members.add(process.pid)
                        if label == "consumer":
                            rss = process.memory_info().rss / 2**20
                            self.peak_rss[label] = max(self.peak_rss[label], rss)
            self.series[label].append((now, sum(self._cpu.get(pid, 0.0) for pid in members)))
        machine = psutil.cpu_times()
        busy = machine.user + machine.nice + machine.system
        busy += sum(getattr(machine, f, 0.0) for f in ("irq", "softirq", "steal"))
        self.series["machine"].append((now, busy))

    @staticmethod
    def _tree(root: psutil.Process) -> list[psutil.Process]:
        try:
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return [root]

    def cpu_between(self, label: str, start_s: float, end_s: float) -> float | None:
        series = self.series.get(label)
        if not series or len(series) < 2:
            return None
        return _interpolate(series, end_s) - _interpolate(series, start_s)


def _interpolate(series: list[tuple[float, float]], at_s: float) -> float:
    if at_s <= series[0][0]:
        return series[0][1]
    for (t0, v0), (t1, v1) in itertools.pairwise(series):
        if t0 <= at_s <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (at_s - t0) / (t1 - t0)
    return series[-1][1]


# ------------------------------------------------------------------------------ one side


@dataclass
class Outcome:
    scenario: Scenario
    side: str  # "worker" or "loop"
    concurrency: int
    published: int = 0
    delivered: int = 0
    finished: bool = False
    rate: float | None = None
    flow_rate: float | None = None  # sends/s from the first send to the p99 completion
    flow_window_s: float | None = None
    stall_s: float | None = None  # the longest gap between two sends within the flow window
    stall_at_s: float | None = None  # when it began, after the first send
    p50_s: float | None = None
    p99_s: float | None = None
    first_send_after_s: float | None = None
    window_s: float = 0.0
    peak_rss_mib: float | None = None
    cpu_s: dict[str, float | None] = field(default_factory=dict)
    busy_pct: float | None = None
    ratio: float | None = None
    rate_first: float | None = None
    rate_last: float | None = None
    window_used: int = 0
    hung_late_s: float | None = None  # median, hung jobs: delivery after their first attempt began
    # At the provider (every scenario; the budget table shows them for the limited ones).
    requests: int = 0
    rate_limited: int = 0  # requests answered 429
    rate_limited_pct: float | None = None
    accepted_per_s: float | None = None  # accepted requests, first to last, over their time
    max_accepted_1s: int = 0  # the most accepted requests within any rolling second
    max_arrived_1s: int = 0  # the same, counting the requests answered 429 too
    mean_batch: float | None = None  # emails per request answered 200 (1 for a single send)
    call_sizes: dict[int, int] = field(default_factory=dict)  # emails per call answered 200: calls
    hung_calls: int = 0
    duplicates: int = 0  # emails delivered more than once, by content (subject, text, html, to)
    dead_letters: int | None = None  # records in the email DLQ (worker)
    undelivered: int = 0  # jobs never delivered when the side stopped
    kills: list[str] = field(default_factory=list)  # the kill -9s, when and what had been sent
    slots_missed: int = 0  # the group's slots left unused between its first and last request
    missed_at_s: list[float] = field(default_factory=list)  # when, after the first request
    slot_lag_ms: list[float] = field(default_factory=list)  # arrival after its slot began: p50, max
    partition_done_s: dict[int, float] = field(default_factory=dict)  # last delivery, after the first
    # Limited runs, every request as the fake saw it: (arrival after the first, emails, status, held s).
    calls: list[tuple[float, int, int, float]] = field(default_factory=list)
    cap_per_s: float | None = None  # emails/s of the cap reference run
    goal: str | None = None  # "met" or "BELOW" (or why it was not judged)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.scenario.name} / {self.side} @ {self.concurrency}"


_OWNS = re.compile(r"email-bulk: this process owns partitions \[([0-9, ]*)\] of (\d+)")


async def shared_out(consumers: Consumers, processes: int, timeout_s: float = 60.0) -> None:
    """Wait until each worker's latest assignment (its log) holds its own partitions and
    together they hold them all."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        latest: list[set[int]] = []
        total = 0
        for log_path in consumers.logs:
            found = _OWNS.findall(log_path.read_text("utf-8", "replace")) if log_path.exists() else []
            if found:
                owned, total_text = found[-1]
                latest.append({int(p) for p in owned.split(",") if p.strip()})
                total = int(total_text)
        union = set().union(*latest) if latest else set()
        if len(latest) == processes and total and len(union) == total == sum(map(len, latest)):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the {processes} workers did not share out the partitions within {timeout_s:.0f} s")


class Consumers:
    """The processes of one side: `faststream run streams.app:app` or the baseline loop."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], log_dir: Path, count: int) -> None:
        self._argv = argv
        self._cwd = cwd
        self._env = {**os.environ, **env}
        self.logs = [log_dir / f"consumer-{i}.log" for i in range(count)]
        self.procs: list[subprocess.Popen[bytes]] = [self._start(path, "wb") for path in self.logs]

    def _start(self, log: Path, mode: str) -> subprocess.Popen[bytes]:
        with log.open(mode) as out:
            return subprocess.Popen(
                self._argv, cwd=self._cwd, env=self._env, stdout=out, stderr=subprocess.STDOUT
            )

    def kill_and_restart(self, index: int, why: str) -> subprocess.Popen[bytes]:
        """`kill -9` process `index` and start its replacement at once (logging to the same
        file); the killed process, to be reaped."""
        victim = self.procs[index]
        victim.kill()
        with self.logs[index].open("ab") as out:
            out.write(f"\n===== benchmark: kill -9 of pid {victim.pid} ({why}); restarting =====\n".encode())
        self.procs[index] = self._start(self.logs[index], "ab")
        return victim

    def psutil_processes(self) -> list[psutil.Process]:
        found = []
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                found.append(psutil.Process(proc.pid))
        return found

    def exited(self) -> list[int]:
        return [proc.returncode for proc in self.procs if proc.poll() is not None]

    async def stop(self, timeout_s: float = 30.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.to_thread(proc.wait, timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for path in self.logs:
            text = path.read_text("utf-8", "replace").splitlines()
            out.append(f"--- {path}\n" + "\n".join(text[-lines:]))
        return "\n".join(out)


def worker_argv() -> list[str]:
    return [str(Path(sys.executable).with_name("faststream")), "run", "streams.app:app"]


def worker_env(
    cfg: Config, scenario: Scenario, prefix: str, group: str, database: str, resend_url: str, concurrency: int
) -> dict[str, str]:
    """The worker's whole configuration: its documented environment variables."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_GROUP_ID": group,
        "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
        "MONGODB_URL": MONGODB_URL,
        "MONGODB_DATABASE": database,
        "RESEND_API_KEY": API_KEY,
        "RESEND_API_URL": resend_url,
        "RESEND_TIMEOUT_S": f"{scenario.timeout_s(cfg):g}",
        "EMAIL_CONCURRENCY": str(concurrency),
        "RESEND_RATE_LIMIT_PER_S": str(scenario.rate_limit or RATE_LIMIT_PER_S),
        "EMAIL_FROM": EMAIL_FROM,
        "PRODUCT_NAME": PRODUCT_NAME,
        "LOG_LEVEL": "INFO",
        "HTTP_PORT": "0",
    }
    if scenario.batch_max:
        env["RESEND_BATCH_MAX"] = str(scenario.batch_max)
    return env | dict(scenario.worker_env)


def loop_argv(cfg: Config, topic: str, group: str, database: str, resend_url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.throughput",
        "_loop",
        f"--topic={topic}",
        f"--group={group}",
        f"--database={database}",
        f"--resend-url={resend_url}",
        f"--inflight={cfg.loop_inflight}",
        f"--timeout-s={cfg.resend_timeout_s}",
        f"--marks={cfg.loop_marks}",
        f"--templates={cfg.templates or ''}",
    ]


class Delivered:
    """The distinct jobs the fake has delivered so far, by the token in the subject (a job
    delivered twice counts once), read on from where the last call stopped."""

    def __init__(self, fake: FakeResend) -> None:
        self._fake = fake
        self._read = 0
        self._tokens: set[str] = set()

    def count(self) -> int:
        deliveries = self._fake.deliveries
        for delivery in deliveries[self._read :]:
            if match := TOKEN.search(str(delivery.body.get("subject", ""))):
                self._tokens.add(match.group(1))
        self._read = len(deliveries)
        return len(self._tokens)


async def kill_in_turn(
    consumers: Consumers, sampler: Sampler, delivered: Delivered, scenario: Scenario, outcome: Outcome
) -> None:
    """From the first send on, every `kill_every_s`: `kill -9` one worker process, in turn, and
    start its replacement at once. The schedule never waits for a worker to come up."""
    while delivered.count() == 0:
        await asyncio.sleep(0.1)
    began = time.monotonic()
    for kill in range(1, scenario.kills + 1):
        await asyncio.sleep(max(0.0, began + kill * scenario.kill_every_s - time.monotonic()))
        index = kill % len(consumers.procs)
        at_s = time.monotonic() - began
        sent = delivered.count()
        victim = consumers.kill_and_restart(index, f"#{kill}, {at_s:.0f} s after the first send")
        with contextlib.suppress(psutil.Error):
            sampler.add("consumer", psutil.Process(consumers.procs[index].pid))
        outcome.kills.append(f"#{kill} at {at_s:.0f} s: process {index}, {sent}/{scenario.jobs} sent")
        print(f"    kill -9 {outcome.kills[-1]}", flush=True)
        await asyncio.to_thread(victim.wait, 10)


async def run_side(cfg: Config, scenario: Scenario, side: str, concurrency: int) -> Outcome:
    tag = f"b{uuid.uuid4().hex[:8]}"
    prefix = f"{tag}."
    # Welcome emails: the worker reads them from `email-bulk`, with its group `<group>.bulk`.
    topic = f"{prefix}email-bulk"
    group = f"bench-{tag}"
    committing_group = f"{group}.bulk" if side == "worker" else group
    database = f"bench_{tag}"
    log_dir = Path(tempfile.mkdtemp(prefix=f"bench-throughput-{scenario.name}-{side}-"))
    outcome = Outcome(scenario, side, concurrency)
    fake = FakeResend().start()
    fake.state.latency_s = scenario.latency_ms / 1000
    consumers: Consumers | None = None
    try:
        await create_topic(topic)
        if scenario.history_docs:
            await prefill_history(database, scenario.history_docs)
        jobs: list[Any] = []
        if not scenario.burst_after_join:
            jobs = await publish(topic, tag, scenario)
            outcome.published = len(jobs)
        if scenario.hang_every:
            # A job sent alone hangs by its Idempotency-Key (its job_id); a batch call has a
            # key of the consumer's own, so 1 in `hang_every` of those hangs at random.
            held_s = cfg.resend_timeout_s + 0.5
            for job in (jobs[seq] for seq in scenario.hung_seqs()):
                fake.hang(job.job_id, held_s)
            fake.set_hang_probability(1 / scenario.hang_every, held_s, seed=0, only_batches=True)
        if scenario.hang_batches:
            # Answered only after the worker gave up: the batch's outcome is unknown to it.
            held_s = scenario.timeout_s(cfg) + 0.5
            fake.set_hang_probability(scenario.hang_batches, held_s, seed=7, only_batches=True)
        if scenario.limited:
            fake.set_rate_limit(scenario.rate_limit)
        if side == "worker":
            env = worker_env(cfg, scenario, prefix, group, database, fake.url, concurrency)
            argv, cwd = worker_argv(), cfg.worker_dir
        else:
            env = {"KAFKA_BOOTSTRAP_SERVERS": KAFKA, "MONGODB_URL": MONGODB_URL}
            argv, cwd = loop_argv(cfg, topic, group, database, fake.url), REPO_ROOT
        started_s = time.time()
        consumers = Consumers(argv, cwd, env, log_dir, scenario.processes)
        if scenario.burst_after_join:
            await shared_out(consumers, scenario.processes)
            started_s = time.time()
            jobs = await publish(topic, tag, scenario)
            outcome.published = len(jobs)
        groups = {"consumer": consumers.psutil_processes(), "fake": [psutil.Process()]}
        groups |= {label: [process] for label, process in service_processes().items()}
        sampler = Sampler(groups)
        delivered = Delivered(fake)
        chaos = None
        if scenario.kills and side == "worker":
            chaos = asyncio.create_task(kill_in_turn(consumers, sampler, delivered, scenario, outcome))
        deadline = time.monotonic() + scenario.deadline_s
        while True:
            sampler.sample()
            if delivered.count() >= len(jobs):
                outcome.finished = True
                break
            if consumers.exited():
                outcome.errors.append(f"consumer exited early (exit status {consumers.exited()})")
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(SAMPLE_EVERY_S)
        if chaos is not None:
            chaos.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chaos
            if outcome.kills:
                outcome.notes.append("kill -9 " + "; ".join(outcome.kills))
        await asyncio.sleep(SETTLE_S)
        sampler.sample()
        await consumers.stop()
        committed = await committed_offsets(committing_group, topic)
        pending: list[str] = []
        dead: list[str] = []
        if side == "worker":
            pending = await job_ids_in(f"{topic}.retry")
            dead = await job_ids_in(f"{topic}.dlq")
            outcome.dead_letters = len(dead)
        requests, deliveries = fake.requests, fake.deliveries
        analyse(outcome, jobs, requests, deliveries, committed, set(pending), set(dead), started_s)
        provider_figures(outcome, requests, deliveries)
        if scenario.limited:
            partition_tails(outcome, jobs, deliveries)
        outcome.max_accepted_1s = max(outcome.max_accepted_1s, fake.max_accepted_in_any_window(1.0))
        budget_checks(outcome)
        if outcome.rate is not None and outcome.first_send_after_s is not None:
            first_s = started_s + outcome.first_send_after_s
            for label in ("consumer", "kafka", "ferretdb", "fake"):
                outcome.cpu_s[label] = sampler.cpu_between(label, first_s, first_s + outcome.window_s)
            machine = sampler.cpu_between("machine", first_s, first_s + outcome.window_s)
            if machine is not None and outcome.window_s > 0:
                ours = sum(v for v in outcome.cpu_s.values() if v is not None)
                other_s = max(0.0, machine - ours)
                outcome.cpu_s["other"] = other_s
                outcome.busy_pct = min(100.0, 100 * machine / (outcome.window_s * (os.cpu_count() or 1)))
                others = other_s / outcome.window_s
                if others > 0.25:
                    outcome.notes.append(f"noisy: other processes used {others:.1f} cores")
        outcome.peak_rss_mib = sampler.peak_rss.get("consumer")
        if outcome.errors and consumers is not None:
            print(consumers.log_tail(), file=sys.stderr)
    except BaseException:
        if consumers is not None:
            print(consumers.log_tail(), file=sys.stderr)
        raise
    finally:
        if consumers is not None:
            await consumers.stop()
        fake.stop()
        await delete_topics(prefix)
        await drop_database(database)
        if outcome.errors or cfg.keep_logs:
            outcome.notes.append(f"logs: {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    return outcome


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _rate(times: Sequence[float]) -> float | None:
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


def flow_count(jobs: int) -> int:
    """How many sends complete FLOW_SHARE of `jobs` (rounded up: 5,940 of 6,000, 40 of 40)."""
    return max(1, math.ceil(round(jobs * FLOW_SHARE, 6)))


def _flow(times: Sequence[float], jobs: int) -> tuple[float | None, float | None]:
    """Sends/s from the first send to the one completing FLOW_SHARE of the jobs, and that window;
    (None, None) when fewer were sent."""
    upto = flow_count(jobs)
    if len(times) < upto:
        return None, None
    return _rate(times[:upto]), times[upto - 1] - times[0]


def _stall(times: Sequence[float], jobs: int) -> tuple[float, float] | None:
    """The longest gap between consecutive sends within the flow window (or all that were
    sent), and when it began after the first send."""
    window = times[: flow_count(jobs)]
    if len(window) < 2:
        return None
    gap, at = max((b - a, a) for a, b in itertools.pairwise(window))
    return gap, at - window[0]


def analyse(
    outcome: Outcome,
    jobs: list[Job],
    requests: list[Request],
    deliveries: list[Delivery],
    committed: dict[int, int],
    pending_retry: set[str],
    dead_lettered: set[str],
    started_s: float,
) -> None:
    """Rate, latency and the exactly-once, no-loss and order checks, from what the fake saw."""
    by_seq = {job.seq: job for job in jobs}
    seen: Counter[int] = Counter()
    sends: list[tuple[float, float, int, str]] = []  # (sent at, arrived at, seq, recipient)
    strangers, wrong_key, wrong_to = [], [], []
    for delivery in deliveries:
        body = delivery.body
        match = TOKEN.search(str(body.get("subject", "")))
        job = by_seq.get(int(match.group(1))) if match else None
        if job is None:
            strangers.append(str(body.get("subject")))
            continue
        seen[job.seq] += 1
        if delivery.batch_index is None and delivery.idempotency_key != job.job_id:
            wrong_key.append(f"{delivery.idempotency_key!r} for {job.job_id!r}")
        if body.get("to") != [job.recipient]:
            wrong_to.append(f"{body.get('to')!r} for {job.recipient!r}")
        sends.append((delivery.at_s, delivery.arrived_s, job.seq, job.recipient))
    for problem, cases in (
        ("deliveries that match no published job", strangers),
        ("deliveries whose Idempotency-Key is not their job_id", wrong_key),
        ("deliveries to the wrong recipient", wrong_to),
    ):
        if cases:
            outcome.errors.append(f"{len(cases)} {problem}, e.g. {cases[0]}")
    duplicates = sorted(seq for seq, n in seen.items() if n > 1)
    if duplicates:
        outcome.errors.append(
            f"DUPLICATES: {len(duplicates)} jobs delivered more than once, e.g. {duplicates[:5]}"
        )
    # A batch call delivers one email per entry under its one key.
    by_key = Counter((d.idempotency_key, d.batch_index) for d in deliveries)
    if any(n > 1 for n in by_key.values()):
        outcome.errors.append("DUPLICATES: an Idempotency-Key delivered more than once")
    batched = [d for d in deliveries if d.batch_index is not None]
    if batched:
        calls = len({d.idempotency_key for d in batched})
        outcome.notes.append(f"{len(batched)} emails in {calls} batch calls")
    missing = [job for job in jobs if seen[job.seq] == 0]
    outcome.undelivered = len(missing)
    lost = [j for j in missing if j.offset < committed.get(j.partition, 0)]
    if outcome.finished and missing:
        outcome.errors.append(f"MISSING: {len(missing)} jobs never delivered")
    in_dlq = [j for j in lost if j.job_id in dead_lettered]
    waiting = [j for j in lost if j.job_id in pending_retry and j.job_id not in dead_lettered]
    truly_lost = [j for j in lost if j.job_id not in dead_lettered and j.job_id not in pending_retry]
    if in_dlq:
        outcome.errors.append(f"DEAD-LETTERED: {len(in_dlq)} jobs, e.g. {in_dlq[0].job_id}")
    if truly_lost:
        outcome.errors.append(
            f"LOST: {len(truly_lost)} jobs committed but never delivered, e.g. {truly_lost[0].job_id}"
        )
    if waiting:
        outcome.notes.append(f"{len(waiting)} in the retry topic at the deadline")
    # A re-send while the hung request with its key is still held is refused 409
    # `concurrent_idempotent_requests`, as Resend does: expected in a hangs run, and retried.
    statuses = Counter(
        r.status for r in requests if not (r.status == 409 and r.error == "concurrent_idempotent_requests")
    )
    # Under a rate limit a 429 is measured (provider_figures), not a failure in itself.
    expected = {200, 429} if outcome.scenario.limited else {200}
    bad = {s: n for s, n in statuses.items() if s not in expected}
    if bad:
        outcome.errors.append(f"provider answered {bad} (409: same key, other payload)")
    # Each answered call either delivered (one email, or a batch's) or replayed an earlier answer.
    delivering_calls = len({d.idempotency_key for d in deliveries if d.idempotency_key is not None})
    delivering_calls += sum(1 for d in deliveries if d.idempotency_key is None)
    replays = statuses[200] - delivering_calls
    if replays:
        outcome.notes.append(f"{replays} re-sends answered by idempotency replay")
    hung = sum(1 for r in requests if r.hung_s)
    if hung:
        began: dict[str, float] = {}  # per hung job, when its first hung attempt arrived
        for r in requests:
            if r.hung_s and r.idempotency_key is not None:
                began[r.idempotency_key] = min(r.arrived_s, began.get(r.idempotency_key, math.inf))
        late = [d.at_s - began[d.idempotency_key] for d in deliveries if d.idempotency_key in began]
        outcome.hung_late_s = _percentile(late, 0.50)
        after = "" if outcome.hung_late_s is None else f", delivered {outcome.hung_late_s:.1f} s (p50) after"
        outcome.notes.append(f"{hung} requests hung{after}")
    elif outcome.scenario.hang_every:
        outcome.notes.append("no request hung")

    sends.sort()
    outcome.delivered = len(sends)
    if not outcome.finished:
        outcome.notes.append(f"deadline: {len(sends)} of {len(jobs)} sent")
    if not sends:
        return
    times = [s[0] for s in sends]
    outcome.rate = _rate(times)
    outcome.flow_rate, outcome.flow_window_s = _flow(times, len(jobs))
    if (stall := _stall(times, len(jobs))) is not None:
        outcome.stall_s, outcome.stall_at_s = stall
        if outcome.stall_s >= STALL_NOTE_S:
            outcome.notes.append(f"sends stopped for {stall[0]:.1f} s, {stall[1]:.1f} s after the first")
    outcome.window_s = times[-1] - times[0]
    outcome.first_send_after_s = times[0] - started_s
    latencies = [at - published_s(by_seq[seq].job_id) for at, _, seq, _ in sends]
    outcome.p50_s = _percentile(latencies, 0.50)
    outcome.p99_s = _percentile(latencies, 0.99)

    per_recipient: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for _, arrived, seq, recipient in sends:
        per_recipient[recipient].append((arrived, seq))
    inversions = 0
    for arrivals in per_recipient.values():
        arrivals.sort()
        inversions += sum(1 for (_, a), (_, b) in itertools.pairwise(arrivals) if b < a)
    if outcome.scenario.ordered:
        if inversions:
            outcome.errors.append(f"ORDER: {inversions} sends of the one key arrived out of publish order")
        elif outcome.scenario.latency_ms:
            outcome.notes.append(f"order held; expected ≈ {1000 / outcome.scenario.latency_ms:.1f}/s")
        else:
            outcome.notes.append("order held")
    elif inversions:
        outcome.notes.append(f"{inversions} sends out of their key's order")

    if outcome.scenario.window:
        window = outcome.scenario.window
        if len(times) < 2 * window:
            window = len(times) // 2
        outcome.window_used = window
        if window >= 2:
            outcome.rate_first = _rate(times[:window])
            outcome.rate_last = _rate(times[-window:])


def _most_in_window(times: Sequence[float], window_s: float = 1.0) -> int:
    """The most of `times` within any half-open window `[t, t + window_s)`."""
    ordered = sorted(times)
    most = end = 0
    for start, start_s in enumerate(ordered):
        while end < len(ordered) and ordered[end] < start_s + window_s:
            end += 1
        most = max(most, end - start)
    return most


def provider_figures(outcome: Outcome, requests: list[Request], deliveries: list[Delivery]) -> None:
    """Requests, 429s, the busiest second, batch sizes, hung calls and duplicates by content."""
    outcome.requests = len(requests)
    outcome.rate_limited = sum(1 for r in requests if r.status == 429)
    if requests:
        outcome.rate_limited_pct = 100 * outcome.rate_limited / len(requests)
    accepted = sorted(r.arrived_s for r in requests if r.status != 429)
    outcome.max_accepted_1s = _most_in_window(accepted)
    outcome.max_arrived_1s = _most_in_window([r.arrived_s for r in requests])
    outcome.accepted_per_s = _rate(accepted)
    answered = [r.emails for r in requests if r.status == 200]
    if answered:
        outcome.mean_batch = sum(answered) / len(answered)
    outcome.call_sizes = dict(sorted(Counter(answered).items()))
    outcome.hung_calls = sum(1 for r in requests if r.hung_s)
    by_content = Counter(d.content_key for d in deliveries)
    outcome.duplicates = sum(n - 1 for n in by_content.values() if n > 1)
    if outcome.scenario.rate_limit and accepted:
        slot_figures(outcome, accepted, SLOT_SPAN / outcome.scenario.rate_limit)
        first = min(r.arrived_s for r in requests)
        outcome.calls = [
            (round(r.arrived_s - first, 3), r.emails, r.status, round(r.hung_s, 1))
            for r in sorted(requests, key=lambda r: r.arrived_s)
        ]


def slot_figures(outcome: Outcome, accepted: Sequence[float], period_s: float) -> None:
    """The group's slots as the provider saw them: slot k begins at k x period_s (epoch s), as
    the worker's budget cuts time. A gap of n periods between two accepted requests left n - 1
    slots unused (their owner had nothing queued, was rebalancing, or woke too late); an
    arrival's lag after its slot began shows how close to the margin the worker sends."""
    lags = sorted(1000 * (at % period_s) for at in accepted)
    outcome.slot_lag_ms = [lags[len(lags) // 2], lags[-1]]
    first = accepted[0]
    for before, after in itertools.pairwise(accepted):
        unused = round((after - before) / period_s) - 1
        if unused > 0:
            outcome.slots_missed += unused
            outcome.missed_at_s.append(round(before - first + period_s, 2))
    if outcome.missed_at_s:
        shown = ", ".join(f"{at:g}" for at in outcome.missed_at_s[:12])
        more = ", ..." if len(outcome.missed_at_s) > 12 else ""
        outcome.notes.append(
            f"{outcome.slots_missed} slots unused, from {shown}{more} s after the first request"
        )


def partition_tails(outcome: Outcome, jobs: list[Job], deliveries: list[Delivery]) -> None:
    """Per partition, when its last job was delivered, after the first delivery: slots belong
    to partitions, so a partition drained early leaves its slots unused while others wait."""
    by_seq = {job.seq: job for job in jobs}
    last: dict[int, float] = {}
    for delivery in deliveries:
        match = TOKEN.search(str(delivery.body.get("subject", "")))
        job = by_seq.get(int(match.group(1))) if match else None
        if job is not None:
            last[job.partition] = max(last.get(job.partition, 0.0), delivery.at_s)
    if last:
        first = min(d.at_s for d in deliveries)
        outcome.partition_done_s = {p: round(at - first, 1) for p, at in sorted(last.items())}


def budget_checks(outcome: Outcome) -> None:
    """What must hold under a rate limit whatever the speed: no second over the limit, nothing
    sent twice, nothing dead-lettered; and with kills, nothing lost and every kill on a live run."""
    scenario = outcome.scenario
    if not scenario.limited:
        return
    limit = scenario.rate_limit or 0
    if outcome.max_accepted_1s > limit:
        outcome.errors.append(
            f"OVER THE LIMIT: {outcome.max_accepted_1s} requests accepted within one second (limit {limit})"
        )
    if outcome.duplicates and not any(e.startswith("DUPLICATES") for e in outcome.errors):
        outcome.errors.append(f"DUPLICATES: {outcome.duplicates} emails delivered twice, by content")
    if outcome.dead_letters and not any(e.startswith("DEAD-LETTERED") for e in outcome.errors):
        outcome.errors.append(f"DEAD LETTERS: {outcome.dead_letters} records in the email DLQ")
    if scenario.kills:
        if outcome.undelivered:
            outcome.errors.append(f"LOST: {outcome.undelivered} jobs never delivered")
        if len(outcome.kills) < scenario.kills:
            outcome.errors.append(
                f"only {len(outcome.kills)} of {scenario.kills} kills came before every job was sent"
            )


# ------------------------------------------------------------------------------ the loop


T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Collects items while one store write is in flight; the next write takes them all."""

    def __init__(self, write: Callable[[list[T]], Awaitable[list[R]]], max_batch: int) -> None:
        self._write = write
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running = False
        self.batches = 0
        self.items = 0
        self.busy_s = 0.0

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._running:
            self._running = True
            asyncio.create_task(self._drain())  # noqa: RUF006 - it ends when the queue is empty
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                self.batches += 1
                self.items += len(batch)
                began = time.monotonic()
                try:
                    results = await self._write([item for item, _ in batch])
                except Exception as error:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                else:
                    self.busy_s += time.monotonic() - began
                    for (_, future), result in zip(batch, results, strict=True):
                        if not future.done():
                            future.set_result(result)
        finally:
            self._running = False


class Watermark:
    """The offset to commit for one partition: just past the longest run of finished jobs."""

    def __init__(self) -> None:
        self._started: deque[int] = deque()
        self._done: set[int] = set()
        self.position: int | None = None
        self.committed: int | None = None

    def started(self, offset: int) -> None:
        self._started.append(offset)

    def finished(self, offset: int) -> None:
        self._done.add(offset)
        while self._started and self._started[0] in self._done:
            first = self._started.popleft()
            self._done.discard(first)
            self.position = first + 1


# The worker's WELCOME_EMAIL, for a checkout whose templates cannot be found.
BUILT_IN_TEMPLATES = {
    "base.txt": "{% block content %}{% endblock %}\n\n--\n{{ product_name }}\n",
    "base.html": "<!doctype html><title>{{ subject }}</title>{% block content %}{% endblock %}"
    "<p>{{ product_name }}</p>\n",
    "WELCOME_EMAIL/subject.txt": "Welcome to {{ product_name }}, {{ job.name }}\n",
    "WELCOME_EMAIL/body.txt": '{% extends "base.txt" %}{% block content %}Welcome, {{ job.name }}!\n\n'
    "Thanks for joining {{ product_name }}. Your account is ready.{% endblock %}",
    "WELCOME_EMAIL/body.html": '{% extends "base.html" %}{% block content %}<h1>Welcome, {{ job.name }}!</h1>'
    "<p>Thanks for joining {{ product_name }}. Your account is ready.</p>{% endblock %}",
}


def _relative(path: Path, root: Path) -> str:
    """`path` inside the worker's checkout, written without this machine's directories."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return path.name


def find_templates(worker_dir: Path) -> Path | None:
    """The folder holding the worker's `email/<TYPE>/` templates, wherever the checkout keeps it."""
    for candidate in (worker_dir / "templates", worker_dir / "processors" / "templates"):
        if (candidate / "email" / "WELCOME_EMAIL" / "subject.txt").is_file():
            return candidate
    for found in sorted(worker_dir.glob("*/**/email/WELCOME_EMAIL/subject.txt")):
        if not any(part.startswith(".") for part in found.relative_to(worker_dir).parts):
            return found.parents[2]
    return None


class Renderer:
    """The worker's templates (or a built-in copy), rendered the way the worker renders them."""

    def __init__(self, templates_dir: Path | None) -> None:
        loader: BaseLoader = (
            FileSystemLoader(templates_dir / "email") if templates_dir else DictLoader(BUILT_IN_TEMPLATES)
        )
        self._html = Environment(
            loader=loader, autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True
        )
        self._text = Environment(
            loader=loader,
            autoescape=False,  # noqa: S701 - plain text is not HTML
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(self, job: dict[str, Any]) -> tuple[str, str, str]:
        context = {"job": job, "product_name": PRODUCT_NAME}
        kind = job["type"]
        subject = " ".join(self._text.get_template(f"{kind}/subject.txt").render(context).split())
        text = self._text.get_template(f"{kind}/body.txt").render(context).strip() + "\n"
        html = self._html.get_template(f"{kind}/body.html").render(context | {"subject": subject})
        return subject, html, text


class Pipeline(ConsumerRebalanceListener):  # type: ignore[misc]
    """The baseline: N jobs in flight, one at a time per key, bulk store writes, watermark commits."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        collection: Any,
        http: httpx.AsyncClient,
        renderer: Renderer,
        *,
        inflight: int,
        timeout_s: float,
        marks: str,
    ) -> None:
        self._consumer = consumer
        self._collection = collection
        self._http = http
        self._renderer = renderer
        self._inflight = inflight
        self._drain_s = timeout_s + 2  # a send that has started may take its whole timeout
        self._marks_mode = marks
        self._slots = asyncio.Semaphore(inflight)
        # Per key, when its latest job has finished sending: the next one may send then.
        self._tails: dict[bytes | None, asyncio.Future[None]] = {}
        self._tasks: dict[TopicPartition, set[asyncio.Task[None]]] = defaultdict(set)
        self._sending: set[asyncio.Task[None]] = set()  # past their key's wait: sending or marking
        self._offsets: dict[TopicPartition, Watermark] = {}
        self._paused: set[TopicPartition] = set()
        self._generation = 0
        self._claims: Batcher[dict[str, Any], bool] = Batcher(self._write_claims, inflight)
        self._marks: Batcher[str, None] = Batcher(self._write_marks, inflight)
        self.stats: Counter[str] = Counter()

    def batching(self) -> str:
        return ", ".join(
            f"{name}: {b.items} in {b.batches} writes, {1000 * b.busy_s / max(b.batches, 1):.0f} ms each"
            for name, b in (("claims", self._claims), ("marks", self._marks))
        )

    # -- Kafka side

    async def run(self, stop: asyncio.Event) -> None:
        consumer = self._consumer
        committer = asyncio.create_task(self._commit_every(0.2, stop))
        try:
            while not stop.is_set():
                generation = self._generation
                batch = await consumer.getmany(timeout_ms=100, max_records=2 * self._inflight)
                for tp, records in batch.items():
                    for record in records:
                        await self._slots.acquire()
                        if (
                            stop.is_set()
                            or generation != self._generation
                            or tp in self._paused
                            or tp not in consumer.assignment()
                        ):
                            self._slots.release()
                            if tp in consumer.assignment():
                                # getmany moved the position past this record: read it again.
                                consumer.seek(tp, record.offset)
                            break
                        self._dispatch(tp, record)
            await self._release(set(self._tasks))
        finally:
            committer.cancel()
            for tasks in self._tasks.values():
                for task in tasks:
                    task.cancel()

    def _dispatch(self, tp: TopicPartition, record: Any) -> None:
        watermark = self._offsets.setdefault(tp, Watermark())
        watermark.started(record.offset)
        previous = self._tails.get(record.key)
        sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[record.key] = sent
        task = asyncio.create_task(self._handle(record.value, previous, sent))
        self._tasks[tp].add(task)
        task.add_done_callback(
            functools.partial(self._finished, tp, record.offset, record.key, watermark, sent)
        )

    def _finished(
        self,
        tp: TopicPartition,
        offset: int,
        key: bytes | None,
        watermark: Watermark,
        sent: asyncio.Future[None],
        task: asyncio.Task[None],
    ) -> None:
        self._slots.release()
        self._tasks[tp].discard(task)
        self._sending.discard(task)
        if not sent.done():
            sent.set_result(None)
        if self._tails.get(key) is sent:
            del self._tails[key]
        if task.cancelled():
            return
        if (error := task.exception()) is not None:
            self.stats["crashed"] += 1
            log.error("job at %s:%s failed: %r (its offset stays uncommitted)", tp.partition, offset, error)
            return
        watermark.finished(offset)

    async def _commit_every(self, interval_s: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(interval_s)
            await self._commit()

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        offsets = {
            tp: w.position
            for tp, w in self._offsets.items()
            if (only is None or tp in only) and w.position is not None and w.position != w.committed
        }
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as error:  # a rebalance: the revoke callback commits what is done
            log.warning("commit failed: %r", error)
            return
        for tp, position in offsets.items():
            if tp in self._offsets:
                self._offsets[tp].committed = position
        self.stats["commits"] += 1

    async def _release(self, tps: set[TopicPartition]) -> None:
        """Let go of partitions: drop jobs that have not started sending, finish the rest, commit.

        Bounded by one send's timeout, so a revocation stays within the rebalance timeout; a
        dropped job is read again by the partition's next owner (its claim says `sending`, and
        the same Idempotency-Key covers a second send).
        """
        tasks = [task for tp in tps for task in self._tasks.get(tp, ())]
        for task in tasks:
            if task not in self._sending:
                task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self._drain_s)
        await self._commit(only=tps)

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        revoked = set(revoked)
        self._paused |= revoked
        self._generation += 1
        await self._release(revoked)
        for tp in revoked:
            self._offsets.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._generation += 1
        self._paused = set()

    # -- one job

    async def _handle(
        self, value: bytes, previous: asyncio.Future[None] | None, sent: asyncio.Future[None]
    ) -> None:
        """Claim, then send once the key's previous job has sent, then mark: sends stay in order."""
        job = json.loads(value)
        job_id = job["job_id"]
        now = datetime.now(UTC)
        claim = {
            "_id": job_id,
            "job_id": job_id,
            "type": job["type"],
            "recipient": job["to"],
            "status": "sending",
            "attempts": 1,
            "lease_until": now + timedelta(seconds=LEASE_S),
            "created_at": now,
            "updated_at": now,
            "history": [],
        }
        claimed = await self._retrying("claim", lambda: self._claims.submit(claim))
        if not claimed:
            found = await self._retrying(
                "lookup", lambda: self._collection.find_one({"_id": job_id}, {"status": 1})
            )
            if found is not None and found.get("status") == "sent":
                self.stats["already_sent"] += 1
                return
            self.stats["reclaimed"] += 1  # sent again under the same Idempotency-Key
        subject, html, text = self._renderer.render(job)
        if previous is not None:
            await asyncio.shield(previous)
        this = asyncio.current_task()
        assert this is not None
        self._sending.add(this)
        try:
            delivered = await self._send(job_id, job["to"], subject, html, text)
        finally:
            if not sent.done():
                sent.set_result(None)
        if delivered:
            await self._retrying("mark", lambda: self._marks.submit(job_id))
            self.stats["sent"] += 1

    async def _send(self, job_id: str, to: str, subject: str, html: str, text: str) -> bool:
        payload = {"from": EMAIL_FROM, "to": [to], "subject": subject, "html": html, "text": text}
        for attempt in itertools.count(1):
            try:
                response = await self._http.post("/emails", json=payload, headers={"Idempotency-Key": job_id})
            except httpx.HTTPError as error:
                reason = type(error).__name__
            else:
                if response.status_code == 200:
                    return True
                name = ""
                with contextlib.suppress(ValueError, AttributeError):
                    name = str(response.json().get("name", ""))
                transient = response.status_code in (429, 500, 502, 503, 504) or (
                    response.status_code == 409 and name == "concurrent_idempotent_requests"
                )
                if not transient:
                    self.stats["permanent"] += 1
                    log.error("job %s: provider answered %s %s", job_id, response.status_code, name)
                    return False
                reason = f"{response.status_code} {name}"
            self.stats["send_retries"] += 1
            log.warning("job %s: send attempt %d failed (%s); retrying", job_id, attempt, reason)
            await asyncio.sleep(min(0.1 * attempt, 1.0))
        raise AssertionError("unreachable")

    async def _retrying(self, what: str, call: Callable[[], Awaitable[R]]) -> R:
        for attempt in itertools.count(1):
            try:
                return await call()
            except PyMongoError as error:
                self.stats[f"{what}_retries"] += 1
                log.warning("%s failed (%r); retrying", what, error)
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
        raise AssertionError("unreachable")

    # -- bulk store writes

    async def _write_claims(self, docs: list[dict[str, Any]]) -> list[bool]:
        try:
            await self._collection.insert_many(docs, ordered=False)
        except BulkWriteError as error:
            write_errors = error.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in write_errors):
                raise
            taken = {e["index"] for e in write_errors}
            return [i not in taken for i in range(len(docs))]
        return [True] * len(docs)

    async def _write_marks(self, job_ids: list[str]) -> list[None]:
        now = datetime.now(UTC)
        update = {
            "$set": {"status": "sent", "provider": "resend", "sent_at": now, "updated_at": now},
            "$unset": {"lease_until": ""},
            "$push": {"history": {"attempt": 1, "at": now, "outcome": "sent"}},
        }
        if self._marks_mode == "in":
            await self._collection.update_many({"_id": {"$in": job_ids}}, update)
        elif self._marks_mode == "each":
            await asyncio.gather(*(self._collection.update_one({"_id": i}, update) for i in job_ids))
        else:  # "insert": one marker document per job in a second collection, no update at all
            sent = self._collection.database[f"{LEDGER}_sent"]
            with contextlib.suppress(BulkWriteError):  # already marked
                await sent.insert_many([{"_id": i, "sent_at": now} for i in job_ids], ordered=False)
        return [None] * len(job_ids)


async def loop_main(opts: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "httpx", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(signum, stop.set)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGODB_URL, tz_aware=True)
    collection = mongo[opts.database][LEDGER]
    await collection.create_index("job_id", unique=True)  # as the worker's ledger does
    await collection.create_index("status")
    http = httpx.AsyncClient(
        base_url=opts.resend_url,
        timeout=httpx.Timeout(opts.timeout_s),
        limits=httpx.Limits(max_connections=opts.inflight, max_keepalive_connections=opts.inflight),
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=KAFKA,
        group_id=opts.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=2 * opts.inflight,
        rebalance_timeout_ms=int((opts.timeout_s + 15) * 1000),  # > the release's bound
    )
    pipeline = Pipeline(
        consumer,
        collection,
        http,
        Renderer(Path(opts.templates) if opts.templates else None),
        inflight=opts.inflight,
        timeout_s=opts.timeout_s,
        marks=opts.marks,
    )
    consumer.subscribe([opts.topic], listener=pipeline)
    await consumer.start()
    log.info("loop ready: %d in flight, marks by %s", opts.inflight, opts.marks)
    try:
        await pipeline.run(stop)
    finally:
        await consumer.stop()
        await http.aclose()
        await mongo.close()
        log.info("loop stopped: %s; %s", dict(pipeline.stats), pipeline.batching())


def run_loop_process(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.throughput _loop")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--resend-url", required=True)
    parser.add_argument("--inflight", type=int, default=50)
    parser.add_argument("--timeout-s", type=float, default=5.0)
    parser.add_argument("--marks", choices=MARKS, default="in")
    parser.add_argument("--templates", default="", help="empty: the built-in copy")
    opts = parser.parse_args(argv)
    try:
        import uvloop  # the worker runs on uvloop too (faststream run picks it when installed)
    except ImportError:
        asyncio.run(loop_main(opts))
    else:
        uvloop.run(loop_main(opts))


# ------------------------------------------------------------------------------ report


def relate(outcomes: list[Outcome], cfg: Config) -> None:
    """Worker/loop ratios, and each hang scenario against its run without hangs."""
    loops = {o.scenario.name: o for o in outcomes if o.side == "loop"}
    for o in outcomes:
        loop = loops.get(o.scenario.name)
        if o.side == "worker" and loop is not None and o.rate and loop.rate:
            o.ratio = o.rate / loop.rate
        if o.scenario.reference:
            ref = next(
                (
                    r
                    for r in outcomes
                    if r.scenario.name == o.scenario.reference
                    and r.side == o.side
                    and r.concurrency == o.concurrency
                ),
                None,
            )
            if ref is None or not ref.flow_rate or not o.flow_rate:
                o.notes.append(f"no {o.scenario.reference} flow rate to compare with")
            else:
                # The goal compares flow rates: the hung jobs' own late arrival (their
                # timeout) only moves the last send, so the whole-run ratio is shown beside it.
                share = 100 * o.flow_rate / ref.flow_rate
                if cfg.smoke:
                    verdict = "smoke: too few jobs to judge"
                else:
                    verdict = ("meets" if share >= 80 else "BELOW") + " the ≥ 80 % target"
                whole = f"; whole run {100 * o.rate / ref.rate:.0f} %" if o.rate and ref.rate else ""
                o.notes.append(f"flow {share:.0f} % of {o.scenario.reference} ({verdict}{whole})")
        if o.rate_first is not None or o.rate_last is not None:
            n = f"{o.window_used:,}"
            o.notes.append(f"first {n}: {_fmt(o.rate_first)}/s, last {n}: {_fmt(o.rate_last)}/s")
        if o.side == "worker" and o.scenario.limited:
            judge_budget(o, outcomes, smoke=cfg.smoke)


def judge_budget(o: Outcome, outcomes: list[Outcome], *, smoke: bool) -> None:
    """The issue's goals for a limited run, item by item, into `o.goal` and a note."""
    s = o.scenario
    limit = s.rate_limit or 0
    items: list[tuple[bool, str]] = []
    if s.goal_per_s:
        target = s.goal_per_s
        ceiling = limit * (s.batch_max or BATCH_MAX)
        cap = ""
        ref = next((r for r in outcomes if r.scenario.name == s.cap_reference and r.side == "worker"), None)
        if ref is not None and ref.rate:
            o.cap_per_s = ref.rate
            busy = "" if ref.busy_pct is None else f", CPU busy {ref.busy_pct:.0f} %"
            if ref.rate < ceiling:
                target = GOAL_SHARE * ref.rate
                cap = f"; 95 % of the stack's cap here, {s.cap_reference} at {ref.rate:.0f}/s{busy}"
            else:
                cap = f"; no cap below {ceiling}/s: {s.cap_reference} at {ref.rate:.0f}/s{busy}"
        elif s.cap_reference:
            cap = f"; no {s.cap_reference} run, so no cap"
        reached = o.finished and o.rate is not None and o.rate >= target
        items.append((reached, f"≥ {target:.0f} emails/s ({_fmt(o.rate)}{cap})"))
    share = o.rate_limited_pct or 0.0
    items.append((share <= 100 * MAX_429_SHARE, f"≤ {100 * MAX_429_SHARE:g} % answered 429 ({share:.1f} %)"))
    items.append((o.max_accepted_1s <= limit, f"≤ {limit} accepted in any second ({o.max_accepted_1s})"))
    items.append((o.duplicates == 0, f"0 sent twice ({o.duplicates})"))
    items.append((not o.dead_letters, f"0 dead letters ({_fmt(o.dead_letters, 0)})"))
    if s.kills:
        items.append((o.undelivered == 0, f"0 lost ({o.undelivered})"))
    met = all(ok for ok, _ in items) and not o.errors
    listed = "; ".join(text if ok else f"**BELOW** {text}" for ok, text in items)
    if smoke:
        o.goal = "smoke: too few jobs to judge"
        o.notes.append(f"goal not judged (smoke): {listed}")
    else:
        o.goal = "met" if met else "BELOW"
        o.notes.append(f"goal {'met' if met else 'NOT MET'}: {listed}")


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _cpu(o: Outcome) -> str:
    return " / ".join(_fmt(o.cpu_s.get(k)) for k in ("consumer", "kafka", "ferretdb", "fake", "other"))


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    kafka_jars = sorted((REPO_ROOT / ".services" / "kafka" / "libs").glob("kafka_2.13-*.jar"))
    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "python": platform.python_version(),
        "kafka": kafka_jars[-1].stem.split("-", 1)[1] if kafka_jars else "external",
    }


def git_label(directory: Path) -> str:
    """The worker's checkout and commit, named without this machine's directories."""
    name = "this checkout" if directory.resolve() == REPO_ROOT.resolve() else directory.name
    try:
        out = subprocess.run(
            ["git", "-C", str(directory), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return f"{name} (not a git checkout)"
    return f"{name} at {out.stdout.strip()}"


def table(outcomes: list[Outcome]) -> str:
    head = (
        "| scenario | side | conc. | procs | sent / jobs | emails/s | flow/s | worker/loop "
        "| publish→send p50 / p99 s "
        "| 1st send s | peak RSS MiB | CPU s: consumer / kafka / ferretdb / fake / other "
        "| CPU busy | notes |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows = []
    for o in outcomes:
        notes = [f"**{e}**" for e in o.errors] + o.notes
        rows.append(
            f"| {o.scenario.name} | {o.side} | {o.concurrency} | {o.scenario.processes} "
            f"| {o.delivered:,} / {o.published:,} | {_fmt(o.rate)} | {_fmt(o.flow_rate)} "
            f"| {_fmt(o.ratio, 2)} "
            f"| {_fmt(o.p50_s)} / {_fmt(o.p99_s)} | {_fmt(o.first_send_after_s)} | {_fmt(o.peak_rss_mib, 0)} "
            f"| {_cpu(o)} | {_fmt(o.busy_pct, 0)} % | {'; '.join(notes)} |"
        )
    return head + "\n".join(rows) + "\n"


def _sizes(call_sizes: dict[int, int], shown: int = 4) -> str:
    """Calls answered 200 by emails in them, the most common first: `39 of 100, 1 of 99, 1 of 1`."""
    common = sorted(call_sizes.items(), key=lambda item: (-item[1], -item[0]))
    text = ", ".join(f"{count} of {size}" for size, count in common[:shown])
    rest = sum(count for _, count in common[shown:])
    return (text + (f", {rest} others" if rest else "")) or "-"


def budget_table(outcomes: list[Outcome]) -> str:
    """The provider's side of the limited runs ("" when there are none)."""
    shown = [o for o in outcomes if o.scenario.limited]
    if not shown:
        return ""
    head = (
        "| scenario | procs | conc. | limit/s | batch max | sent / jobs | emails/s | flow/s "
        "| requests (accepted/s) | 429 (share) | max in 1 s: accepted / arrived | slots unused "
        "| lag after slot p50 / max ms | mean batch | calls by size | partitions done s "
        "| sent twice | dead letters | lost | kills | hung calls | goal |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
        "---:|---:|---:|---:|---:|---|\n"
    )
    rows = []
    for o in shown:
        s = o.scenario
        rows.append(
            f"| {s.name} | {s.processes} | {o.concurrency} | {s.rate_limit} | {s.batch_max or '-'} "
            f"| {o.delivered:,} / {o.published:,} | {_fmt(o.rate)} | {_fmt(o.flow_rate)} "
            f"| {o.requests:,} ({_fmt(o.accepted_per_s, 2)}) "
            f"| {o.rate_limited} ({_fmt(o.rate_limited_pct)} %) | {o.max_accepted_1s} / {o.max_arrived_1s} "
            f"| {o.slots_missed} | {' / '.join(_fmt(v, 0) for v in o.slot_lag_ms) or '-'} "
            f"| {_fmt(o.mean_batch)} | {_sizes(o.call_sizes)} "
            f"| {' / '.join(_fmt(v) for v in o.partition_done_s.values()) or '-'} "
            f"| {o.duplicates} | {_fmt(o.dead_letters, 0)} "
            f"| {o.undelivered} | {len(o.kills)} | {o.hung_calls} | {o.goal or '-'} |"
        )
    return head + "\n".join(rows) + "\n"


def write_markdown(cfg: Config, outcomes: list[Outcome], path: Path, chart: Path | None) -> None:
    info = machine()
    scenario_lines = "\n".join(f"- `{s.name}`: {s.describe()}" for s in cfg.scenarios)
    failures = [f"- {o.label}: {e}" for o in outcomes for e in o.errors]
    chart_line = f"\n![emails/s against concurrency]({chart.name})\n" if chart else ""
    share = round(FLOW_SHARE * 100)
    budget = budget_table(outcomes)
    budget_section = f"\nThe provider's rate limit (worker only):\n\n{budget}" if budget else ""
    text = f"""# Email throughput: worker against a hand-written loop

Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{cfg.command}`.

- Machine: {info["cores"]} cores ({info["cpu"]}), {info["memory"]}, Python {info["python"]}.
- Servers: Kafka {info["kafka"]} at {KAFKA} and the store at {MONGODB_URL} (FerretDB on
  SQLite, as `make services` starts it); the provider is the local fake Resend
  (tests/fakes/resend_server.py) in the benchmark's own process.
- Worker: `faststream run streams.app:app` in {cfg.worker_label}, with EMAIL_CONCURRENCY =
  the `conc.` column, RESEND_RATE_LIMIT_PER_S={RATE_LIMIT_PER_S} and
  RESEND_TIMEOUT_S={cfg.resend_timeout_s:g} (the limited scenarios set their own, as listed
  below).
- Loop: {cfg.loop_inflight} jobs in flight, claims by `insert_many`, marks by
  {MARKS[cfg.loop_marks]}; it renders {
        f"the worker's templates ({_relative(cfg.templates, cfg.worker_dir)})"
        if cfg.templates
        else "a built-in copy of WELCOME_EMAIL"
    }.

Scenarios ({PARTITIONS} partitions each; the Kafka key is the recipient):

{scenario_lines}

{table(outcomes)}{budget_section}{chart_line}
How to read it:

- **emails/s**: sends at the fake provider, from the first to the last, over their time.
  With `deadline` in the notes the side was stopped before every job was sent; the rate is
  over what was sent.
- **flow/s**: sends at the fake from the first to the one that completes {share} % of the
  jobs (the p{share} completion), over that time: the same measure for every scenario and
  side (`-` when fewer were sent). It is how fast the stream flows, leaving out the last
  {100 - share} % of jobs to arrive. Where the sends stopped for {STALL_NOTE_S:g} s or more within
  that window (a rebalance, a wave), a note says how long and when.
- **hangs** (`hangs-*`): 1 % of sends are held past RESEND_TIMEOUT_S
  ({cfg.resend_timeout_s:g} s here): the first send of one job in 100 when it is sent alone
  (by its Idempotency-Key, each on another recipient), and 1 batch call in 100 (at random,
  fixed seed). Those jobs arrive late by design,
  whatever the consumer: it waits out the timeout, then retries after its backoff (the fake
  delivers the email when the held request ends and answers the retry by idempotency
  replay; the notes give how late, at the median, from the hung attempt's start). The last
  of them reach the provider seconds after every other job, so emails/s, which ends at the
  last send, is in large part that timeout, not a slower stream. The goal (≥ 80 % of the
  same run without hangs, same job count) therefore compares **flow/s**. A consumer that
  keeps the other jobs moving loses about the slots the hung sends hold while they wait;
  one that gathers N jobs and waits for the slowest of them stalls every group with a hung
  job in it (about half of them at N = 64), and its p{share} completion moves out with
  them. The note gives the whole-run ratio too.
- **publish→send**: from the publish time carried in the job_id to the provider accepting
  the email. The jobs are published before the consumer starts, so this is mostly time spent
  waiting in the topic, start-up included (**1st send s** is the time from starting the
  consumer to its first send).
- **CPU s** over the window from the first to the last send, per process: the consumer
  (all its processes), the Kafka broker, FerretDB, this benchmark's process (the fake
  provider), and everything else on the machine (`other`: anything there is noise from
  outside the benchmark; the broker and the store may also be serving other clients).
  **CPU busy** is the whole machine's CPU time over (window x {info["cores"]} cores): near
  100 % the CPU is the limit; far below it, the consumer is waiting (on the provider's
  latency, the store, or itself).
- **peak RSS**: the largest consumer process, sampled every {SAMPLE_EVERY_S:g} s.
- Checks at the fake, by the token in each email's subject and by Idempotency-Key: every
  job delivered once, none delivered twice, no committed job missing, and with one key the
  sends arrive in publish order.
"""
    if budget:
        text += budget_reading(cfg)
    if failures:
        text += "\n## Failed checks\n\n" + "\n".join(failures) + "\n"
    path.write_text(text)


def budget_reading(cfg: Config) -> str:
    """How to read the limited runs (the scenarios and goals of the rate-limit issue)."""
    goal = round(GOAL_SHARE * LIMIT_PER_S * BATCH_MAX)
    ceiling = LIMIT_PER_S * BATCH_MAX
    return f"""- **The provider's rate limit** (`limited-*`, `batch-chaos`; table above): the fake
  refuses any request beyond {LIMIT_PER_S} in a rolling second with 429 and `retry-after`, and
  the worker runs with RESEND_RATE_LIMIT_PER_S={LIMIT_PER_S}, one budget for all its processes
  (time slots by owned partition), and sends the jobs that wait for a slot as one
  `POST /emails/batch` of up to RESEND_BATCH_MAX. **Worker only**: the hand-written loop
  has no budget, so it has no side in these scenarios (its figures for the unlimited
  scenarios are above). `nolimit-50ms` is the same {BUDGET_CONCURRENCY}-in-flight,
  one-key-per-job run with no limit (RESEND_RATE_LIMIT_PER_S={RATE_LIMIT_PER_S}, none at
  the fake): how fast the whole stack goes on this machine.
  - `limited-2rps`: 1 process, {BUDGET_CONCURRENCY} in flight, batches of {BATCH_MAX}: at most
    {LIMIT_PER_S} x {BATCH_MAX} = {ceiling} emails/s (a little less: the slots are
    1.02 / limit apart). Goal ≥ {goal}/s ({100 * GOAL_SHARE:g} %); where `nolimit-50ms` shows the
    stack cannot reach {ceiling}/s here (the machine's CPU, noted with its CPU busy), ≥ 95 %
    of that cap instead, with the cap shown. A process fills a batch only with ~{BATCH_MAX}
    jobs waiting at each of its slots: hence EMAIL_CONCURRENCY={BUDGET_CONCURRENCY} (a batch
    holds at most the process's EMAIL_CONCURRENCY jobs) and one key per job (the jobs of one
    key go one at a time).
  - `limited-2rps-3p`: the same with 3 processes sharing the one budget (each owns one of the
    {PARTITIONS} partitions, so one slot in three). Goal ≥ 180 emails/s in total.
  - For both: ≤ {100 * MAX_429_SHARE:g} % of requests answered 429, no second with more than
    {LIMIT_PER_S} requests accepted, nothing sent twice, no dead letter.
  - `batch-chaos`: 2 processes, batches of 10 (so the run outlasts the minute of kills),
    RESEND_TIMEOUT_S=2 and quick email retries; 5 % of batch calls are answered only after
    2.5 s (the worker has given up: outcome unknown; fixed seed); from the first send, a
    `kill -9` of one process every 10 s, in turn, 6 times, each restarted at once; then
    every job is waited for. Goal: 0 lost (never delivered), 0 sent twice (by content).
- Columns of that table: **requests** at the fake (any status), with the accepted ones per
  second from the first to the last (≈ {LIMIT_PER_S / 1.02:.2f} when every slot is used);
  **429** and their share; **max in 1 s**: the most requests the fake accepted within any
  rolling second (the fake refuses the rest, so this cannot exceed the limit: the 429s are
  what the worker sent over its budget) and the most that arrived, 429s included; **slots
  unused**: the group's slots (k x {SLOT_SPAN:g} / limit s from the epoch, as the worker's
  budget cuts time) left without a request between the first request and the last, and in
  the notes when (a slot's owner had nothing queued, was rebalancing, or woke too late: its
  request must start within 20 ms of the slot); **lag after slot**: how long after its
  slot began each accepted request reached the fake, p50 and max; **mean batch**: emails
  per request answered 200 (1 for a single send); **calls by size**: those requests by
  emails in them, the most common first; **partitions done**: per partition, when its last
  job was delivered, in seconds after the first delivery (slots belong to partitions: one
  drained early leaves its share of the budget unused while the others still have jobs
  waiting); **sent twice**: emails delivered more
  than once, by content (recipient, subject, text, html); **dead letters**: records in the
  email DLQ topic; **lost**: jobs never delivered when the run stopped; **kills**: `kill -9`s
  (when, and how many jobs had been sent, in the notes); **hung calls**: requests held past
  the timeout; **goal**: `met` or `BELOW`, item by item in the notes of the main table.
"""


def write_json(cfg: Config, outcomes: list[Outcome], path: Path) -> None:
    """Every figure of the run, for comparing runs (say, before and after a change)."""
    document = {
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": cfg.command,
        "machine": machine(),
        "worker": cfg.worker_label,
        "kafka": KAFKA,
        "store": MONGODB_URL,
        "resend_timeout_s": cfg.resend_timeout_s,
        "loop": {"inflight": cfg.loop_inflight, "marks": cfg.loop_marks},
        "outcomes": [
            {
                "scenario": asdict(o.scenario),
                **{k: v for k, v in asdict(o).items() if k != "scenario"},
            }
            for o in outcomes
        ],
    }
    path.write_text(json.dumps(document, indent=1) + "\n")


def write_chart(cfg: Config, outcomes: list[Outcome], path: Path) -> None:
    """emails/s against concurrency: the sweep scenarios (all scenarios when none swept)."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(
            "matplotlib is not installed: `.venv/bin/pip install matplotlib==3.11.2` (a dev dependency)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    swept = [o for o in outcomes if o.scenario.sweep]
    shown = swept if any(o.side == "worker" and o.rate for o in swept) else outcomes
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys(o.scenario.name for o in shown))
    levels: set[int] = set()
    for i, name in enumerate(names):
        colour = colours[i % len(colours)]
        worker = sorted(
            (o.concurrency, o.rate) for o in shown if o.scenario.name == name and o.side == "worker"
        )
        points = [(x, y) for x, y in worker if y]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", color=colour, label=f"{name}: worker")
            levels |= {x for x, _ in points}
            for x, y in points:
                ax.annotate(f"{y:.3g}", (x, y), textcoords="offset points", xytext=(6, -12), fontsize=8)
        for o in shown:
            if o.scenario.name == name and o.side == "loop" and o.rate:
                ax.scatter([o.concurrency], [o.rate], marker="*", s=180, color=colour, label=f"{name}: loop")
                ax.axhline(o.rate, color=colour, linestyle=":", alpha=0.5)
                ax.annotate(
                    f"{o.rate:.3g}",
                    (o.concurrency, o.rate),
                    textcoords="offset points",
                    xytext=(-30, 6),
                    fontsize=8,
                )
                levels.add(o.concurrency)
    ax.set_xscale("log")
    ax.set_yscale("log")
    if levels:
        ax.set_xticks(sorted(levels))
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("EMAIL_CONCURRENCY (worker: dots) / jobs in flight (loop: stars, dotted line)")
    ax.set_ylabel("emails/s, first to last send")
    ax.set_title(
        f"Email throughput against concurrency on {os.cpu_count()} cores "
        "(Kafka + FerretDB + fake Resend, one machine)",
        fontsize=11,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------------------ main


def plan(cfg: Config) -> list[tuple[Scenario, str, int]]:
    runs = []
    for scenario in cfg.scenarios:
        if "worker" in cfg.sides:
            if scenario.concurrency:
                levels: tuple[int, ...] = (scenario.concurrency,)
            else:
                levels = cfg.concurrency if scenario.sweep else (max(cfg.concurrency),)
            runs += [(scenario, "worker", c) for c in levels]
        if "loop" in cfg.sides and not scenario.worker_only:
            runs.append((scenario, "loop", cfg.loop_inflight))
    return runs


async def run_all(cfg: Config) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # a new topic's metadata, a group's end
    await check_servers()
    outcomes = []
    runs = plan(cfg)
    began = time.monotonic()
    for i, (scenario, side, concurrency) in enumerate(runs, 1):
        print(
            f"==> [{i}/{len(runs)}] {scenario.name}: {side} at {concurrency} ({scenario.describe()})",
            flush=True,
        )
        outcome = await run_side(cfg, scenario, side, concurrency)
        print(
            f"    {outcome.delivered}/{outcome.published} sent, {_fmt(outcome.rate)} emails/s "
            f"(flow {_fmt(outcome.flow_rate)}/s), "
            f"p50/p99 {_fmt(outcome.p50_s)}/{_fmt(outcome.p99_s)} s, CPU s {_cpu(outcome)}"
            + (
                f"\n    {outcome.requests} requests, {outcome.rate_limited} answered 429, "
                f"max {outcome.max_accepted_1s} accepted in 1 s, mean batch {_fmt(outcome.mean_batch)}, "
                f"{outcome.duplicates} sent twice, {_fmt(outcome.dead_letters, 0)} dead letters, "
                f"{outcome.undelivered} undelivered, {outcome.slots_missed} slots unused, "
                f"partitions done at {list(outcome.partition_done_s.values())} s"
                if scenario.limited
                else ""
            )
            + "".join(f"\n    FAILED: {e}" for e in outcome.errors),
            flush=True,
        )
        outcomes.append(outcome)
    relate(outcomes, cfg)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    chart = cfg.out.with_suffix(".png")
    write_chart(cfg, outcomes, chart)
    markdown = cfg.out.with_suffix(".md")
    write_markdown(cfg, outcomes, markdown, chart)
    raw = cfg.out.with_suffix(".json")
    write_json(cfg, outcomes, raw)
    print()
    print(table(outcomes))
    if budget := budget_table(outcomes):
        print(budget)
    print(f"wrote {markdown}, {chart} and {raw.name} in {time.monotonic() - began:.0f} s")
    failed = [o for o in outcomes if o.errors]
    if failed:
        print(f"FAILED CHECKS in {len(failed)} runs: " + ", ".join(o.label for o in failed), file=sys.stderr)
        return 1
    return 0


def parse_config(argv: list[str]) -> Config | None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput",
        description="Email throughput of the worker against a hand-written aiokafka loop.",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny counts, under a minute (CI)")
    parser.add_argument("--list", action="store_true", help="print the scenarios and exit")
    parser.add_argument("--scenarios", help="comma-separated names (default: all of the mode's)")
    parser.add_argument("--jobs", type=int, help="jobs per side, for every chosen scenario")
    parser.add_argument("--deadline-s", type=float, help="per-side deadline, for every chosen scenario")
    parser.add_argument(
        "--concurrency",
        default=None,
        help="the worker's EMAIL_CONCURRENCY values for sweep scenarios; others use the largest "
        "(default 1,10,50; smoke 50)",
    )
    parser.add_argument("--loop-inflight", type=int, default=50, help="jobs in flight in the loop")
    parser.add_argument(
        "--loop-marks",
        choices=MARKS,
        # Inserts, as the worker's ledger does: FerretDB serves update_many($in) by a scan
        # per document, so that loop would measure the store, not the pipeline.
        default="insert",
        help="the loop marks jobs sent by one update_many $in per batch (in), one update_one per "
        "job (each), or by insert_many of marker documents into a second collection (insert)",
    )
    parser.add_argument("--sides", default="worker,loop", help="worker, loop or both")
    parser.add_argument("--resend-timeout-s", type=float, help="RESEND_TIMEOUT_S (default 5; smoke 1)")
    parser.add_argument(
        "--worker-dir",
        type=Path,
        default=Path(os.environ.get("THROUGHPUT_WORKER_DIR") or REPO_ROOT),
        help="the checkout whose worker runs (default: this one, or $THROUGHPUT_WORKER_DIR)",
    )
    parser.add_argument("--worker-label", help="how the report names the worker (default: git describe)")
    parser.add_argument("--out", type=Path, help="output stem: STEM.md and STEM.png")
    parser.add_argument("--keep-logs", action="store_true", help="keep each side's logs in /tmp")
    args = parser.parse_args(argv)

    catalogue = SMOKE if args.smoke else FULL
    if args.scenarios:
        wanted = [n.strip() for n in args.scenarios.split(",") if n.strip()]
        known = {s.name: s for s in catalogue}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            parser.error(f"unknown scenarios {unknown}; known: {', '.join(known)}")
        chosen = []
        for scenario in [known[n] for n in wanted]:
            # A hangs scenario's ratio needs its reference run, and a limited run's goal the
            # run without the limit (the stack's cap): add it, just before.
            for ref in (scenario.reference, scenario.cap_reference):
                if ref and ref in known and ref not in wanted:
                    chosen.append(known[ref])
                    wanted.append(ref)
            chosen.append(scenario)
    else:
        chosen = list(catalogue)
    if args.jobs:
        chosen = [replace(s, jobs=args.jobs) for s in chosen]
    if args.deadline_s:
        chosen = [replace(s, deadline_s=args.deadline_s) for s in chosen]
    if args.list:
        for s in chosen:
            print(f"{s.name:18} {s.describe()}")
        return None
    concurrency = tuple(int(c) for c in (args.concurrency or ("50" if args.smoke else "1,10,50")).split(","))
    sides = tuple(s.strip() for s in args.sides.split(",") if s.strip())
    if not set(sides) <= {"worker", "loop"} or not sides:
        parser.error("--sides takes worker, loop or both")
    default_out = DEFAULT_OUT.with_name("throughput-smoke") if args.smoke else DEFAULT_OUT
    return Config(
        scenarios=tuple(chosen),
        concurrency=concurrency,
        loop_inflight=args.loop_inflight,
        loop_marks=args.loop_marks,
        sides=sides,
        resend_timeout_s=args.resend_timeout_s or (1.0 if args.smoke else 5.0),
        worker_dir=args.worker_dir.resolve(),
        templates=find_templates(args.worker_dir.resolve()),
        worker_label=args.worker_label or git_label(args.worker_dir.resolve()),
        out=(args.out or default_out).resolve(),
        keep_logs=args.keep_logs,
        command=" ".join(["python -m benchmarks.throughput", *argv]),
        smoke=args.smoke,
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["_loop"]:
        run_loop_process(argv[1:])
        return 0
    cfg = parse_config(argv)
    if cfg is None:
        return 0
    return asyncio.run(run_all(cfg))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
