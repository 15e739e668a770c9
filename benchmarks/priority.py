"""Codes first: how long a sign-in code waits behind a burst of welcome emails.

    make bench                                           # after the throughput run; ~4 min
    .venv/bin/python -m benchmarks.priority              # the three scenarios below
    .venv/bin/python -m benchmarks.priority --smoke      # 300 welcomes, 5 codes, < 1 min
    .venv/bin/python -m benchmarks.priority --scenarios bulk-lane --welcomes 2000

The goal (issue 11, "Codes first"): with 10,000 welcome emails queued and the provider at
2 requests/s, an OTP published afterwards is sent within 10 s, p99 over 50 codes.

Needs `make services`. Each scenario gets a fresh topic prefix, consumer group and
database, and a local fake Resend (tests/fakes/resend_server.py, in this process) that
answers 429 beyond 2 requests in a rolling second, with 50 ms latency. It publishes the
welcomes (one recipient each) through `streams.producer.JobPublisher`, starts the
consumer, waits until welcomes arrive at the fake, then publishes the SEND_OTP jobs (one
recipient each) evenly spread over 20 s, and waits until every email has been sent:

- `bulk-lane` (A): the worker, `faststream run streams.app:app` in a subprocess, set up by
  environment variables only (RESEND_RATE_LIMIT_PER_S=2, RESEND_BATCH_MAX=100,
  HTTP_PORT=0); the welcomes go where `JobPublisher.email` routes them, `email-bulk`;
- `old-producer` (B): the same worker, with the welcomes published on `email-jobs`, as a
  producer written before the split does; the worker must move them to `email-bulk`;
- `baseline`: a hand-written aiokafka loop (this file, `python -m benchmarks.priority
  _loop ...`) doing what a single-lane worker does: it consumes one topic in offset order,
  renders the worker's templates, and sends the records in that order in batch calls of up
  to 100, one call per slot of 1.02 / 2 s, committing after each call. Welcomes and codes
  share its topic.

A code's latency runs from the moment before its publish call to the fake accepting it
(the fake's delivery record). The report gives p50, p99 and max per scenario, how many
welcomes were still unsent when the last code went out (they were queued: the codes did
not just find an idle provider), the 429s, and whether a code ever rode behind a welcome
in a batch call. Results go to benchmarks/results/priority.md and priority.json
(`--smoke`: priority-smoke.*; `--out STEM` elsewhere). A failed check (a code or welcome
never sent, one sent twice, a second over the limit, a consumer that died) is printed
loudly and makes the exit status non-zero; a missed goal is shown in the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks.throughput import (
    API_KEY,
    EMAIL_FROM,
    KAFKA,
    MONGODB_URL,
    PARTITIONS,
    PRODUCT_NAME,
    REPO_ROOT,
    SLOT_SPAN,
    TOKEN,
    Consumers,
    Renderer,
    _fmt,
    _percentile,
    check_servers,
    create_topic,
    delete_topics,
    drop_database,
    find_templates,
    git_label,
    machine,
    worker_argv,
)
from processors.email.jobs import SendOtpJob, WelcomeEmailJob
from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.fakes.resend_server import BATCH_PATH, Delivery, FakeResend, Request

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "priority"
GOAL_P99_S = 10.0
PUBLISH_CHUNK = 1_000  # welcomes in flight at once while publishing
FLOWING_TIMEOUT_S = 90.0  # from the consumer's start to the first welcome at the fake
POLL_S = 0.2

log = logging.getLogger("priority")


@dataclass(frozen=True)
class Load:
    welcomes: int
    codes: int
    codes_over_s: float  # the codes are published evenly over this span
    batch_max: int  # RESEND_BATCH_MAX, and the baseline's batch
    limit_per_s: int = 2  # the fake's limit per rolling second = RESEND_RATE_LIMIT_PER_S
    latency_ms: int = 50

    @property
    def ceiling_per_s(self) -> float:
        return self.limit_per_s * self.batch_max / SLOT_SPAN

    @property
    def deadline_s(self) -> float:
        """From the consumer's start until every email must have been sent."""
        return FLOWING_TIMEOUT_S + self.welcomes / (0.5 * self.ceiling_per_s) + self.codes_over_s

    def describe(self) -> str:
        return (
            f"{self.welcomes:,} WELCOME_EMAIL (one recipient each), then {self.codes} SEND_OTP "
            f"(one recipient each) over {self.codes_over_s:g} s; provider limited to "
            f"{self.limit_per_s} requests/s, {self.latency_ms} ms latency; batches of up to "
            f"{self.batch_max}"
        )


FULL = Load(welcomes=10_000, codes=50, codes_over_s=20.0, batch_max=100)
# 300 welcomes in batches of 20 last ~7 s at 2 calls/s: still queued when the codes go out.
SMOKE = Load(welcomes=300, codes=5, codes_over_s=2.0, batch_max=20)


@dataclass(frozen=True)
class Scenario:
    name: str
    side: str  # "worker" or "loop"
    welcomes_on: str  # the topic the welcomes are published on (without the prefix)
    summary: str


SCENARIOS = (
    Scenario(
        "bulk-lane",
        "worker",
        "email-bulk",
        "A: the worker; welcomes on `email-bulk`, where `JobPublisher.email` routes them",
    ),
    Scenario(
        "old-producer",
        "worker",
        "email-jobs",
        "B: the worker; welcomes published on `email-jobs` (a producer older than the split), "
        "moved by the worker to `email-bulk`",
    ),
    Scenario(
        "baseline",
        "loop",
        "email-jobs",
        "a hand-written aiokafka loop: one topic in offset order, batch calls in that order",
    ),
)


@dataclass(frozen=True)
class Config:
    scenarios: tuple[Scenario, ...]
    load: Load
    worker_dir: Path
    worker_label: str
    out: Path
    keep_logs: bool
    command: str
    smoke: bool


# ------------------------------------------------------------------------------ one scenario


@dataclass
class Outcome:
    scenario: Scenario
    welcomes: int = 0  # published
    codes: int = 0  # published
    codes_sent: int = 0
    welcomes_sent: int = 0
    latencies_s: list[float] = field(default_factory=list)  # per code sent, in publish order
    p50_s: float | None = None
    p99_s: float | None = None
    max_s: float | None = None
    # Welcomes not yet sent when the last code was (those in that code's call count as sent).
    welcomes_unsent_at_last_code: int | None = None
    welcomes_per_s: float | None = None  # first to last welcome at the fake
    first_send_after_s: float | None = None  # from the consumer's start
    requests: int = 0
    rate_limited: int = 0  # requests answered 429
    max_accepted_1s: int = 0
    mean_batch: float | None = None
    calls_with_codes: int = 0
    codes_behind_welcomes: int = 0  # codes placed after a welcome in their batch call
    speedup: float | None = None  # the baseline's p99 / this p99
    goal: str | None = None
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def worker_env(load: Load, prefix: str, group: str, database: str, resend_url: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_GROUP_ID": group,
        "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
        "MONGODB_URL": MONGODB_URL,
        "MONGODB_DATABASE": database,
        "RESEND_API_KEY": API_KEY,
        "RESEND_API_URL": resend_url,
        "RESEND_RATE_LIMIT_PER_S": str(load.limit_per_s),
        "RESEND_BATCH_MAX": str(load.batch_max),
        "EMAIL_FROM": EMAIL_FROM,
        "PRODUCT_NAME": PRODUCT_NAME,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": "0",
        "LOG_LEVEL": "INFO",
    }


def loop_argv(load: Load, topic: str, group: str, resend_url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.priority",
        "_loop",
        f"--topic={topic}",
        f"--group={group}",
        f"--resend-url={resend_url}",
        f"--batch-max={load.batch_max}",
        f"--limit-per-s={load.limit_per_s}",
    ]


def welcome(tag: str, seq: int) -> WelcomeEmailJob:
    # The name carries `seq`: the worker's subject is "Welcome to Acme, <name>" (TOKEN).
    return WelcomeEmailJob(
        type="WELCOME_EMAIL", job_id=f"{tag}-w{seq}", to=f"user{seq}@example.com", name=f"Reader n{seq:07d}"
    )


def code_recipient(index: int) -> str:
    return f"code{index}@example.com"


async def publish_welcomes(publisher: JobPublisher, tag: str, count: int, topic: str | None) -> None:
    for start in range(0, count, PUBLISH_CHUNK):
        jobs = [welcome(tag, seq) for seq in range(start, min(count, start + PUBLISH_CHUNK))]
        await asyncio.gather(*(publisher.email(job, topic=topic) for job in jobs))


async def publish_codes(publisher: JobPublisher, tag: str, load: Load) -> list[float]:
    """The codes, evenly spread over `codes_over_s`; each one's time just before its publish call."""
    spacing_s = load.codes_over_s / max(1, load.codes - 1)
    began = time.monotonic()
    published: list[float] = []
    for index in range(load.codes):
        await asyncio.sleep(max(0.0, began + index * spacing_s - time.monotonic()))
        job = SendOtpJob(
            type="SEND_OTP", job_id=f"{tag}-otp{index}", to=code_recipient(index), code=f"{index:06d}"
        )
        published.append(time.time())
        await publisher.email(job)
    return published


async def run_scenario(cfg: Config, scenario: Scenario) -> Outcome:
    load = cfg.load
    tag = f"p{uuid.uuid4().hex[:8]}"
    prefix = f"{tag}."
    topics = TopicNames.with_prefix(prefix)
    group = f"bench-{tag}"
    database = f"bench_{tag}"
    log_dir = Path(tempfile.mkdtemp(prefix=f"bench-priority-{scenario.name}-"))
    outcome = Outcome(scenario)
    fake = FakeResend().start()
    fake.state.latency_s = load.latency_ms / 1000
    fake.set_rate_limit(load.limit_per_s)
    consumers: Consumers | None = None
    published: list[float] = []
    # Welcomes on email-jobs: name the topic; on email-bulk: let the publisher route them.
    welcomes_topic = topics.email_jobs.main if scenario.welcomes_on == "email-jobs" else None
    try:
        await create_topic(topics.email_jobs.main)
        if scenario.side == "worker":
            await create_topic(topics.email_bulk.main)
        options = {"linger_ms": 10, "max_batch_size": 256 * 1024}
        async with JobPublisher(KAFKA, topics, client_options=options) as publisher:
            await publish_welcomes(publisher, tag, load.welcomes, welcomes_topic)
            outcome.welcomes = load.welcomes
            if scenario.side == "worker":
                env = worker_env(load, prefix, group, database, fake.url)
                argv, cwd = worker_argv(), cfg.worker_dir
            else:
                env = {"KAFKA_BOOTSTRAP_SERVERS": KAFKA}
                argv, cwd = loop_argv(load, topics.email_jobs.main, group, fake.url), REPO_ROOT
            started_s = time.time()
            consumers = Consumers(argv, cwd, env, log_dir, 1)
            flowing = await wait_for(lambda: bool(fake.deliveries), consumers, FLOWING_TIMEOUT_S)
            if not flowing:
                outcome.errors.append(
                    f"consumer exited (exit status {consumers.exited()}) before any welcome was sent"
                    if consumers.exited()
                    else f"no welcome reached the provider within {FLOWING_TIMEOUT_S:g} s"
                )
                return outcome
            published = await publish_codes(publisher, tag, load)
            outcome.codes = len(published)
        total = load.welcomes + load.codes
        remaining_s = started_s + load.deadline_s - time.time()
        finished = await wait_for(lambda: len(fake.deliveries) >= total, consumers, remaining_s)
        if not finished:
            outcome.notes.append(f"deadline: {len(fake.deliveries)} of {total} sent")
        if consumers.exited():
            outcome.errors.append(f"consumer exited early (exit status {consumers.exited()})")
        await consumers.stop()
        analyse(outcome, load, published, fake.requests, fake.deliveries, started_s)
        outcome.max_accepted_1s = fake.max_accepted_in_any_window(1.0)
        if outcome.max_accepted_1s > load.limit_per_s:
            outcome.errors.append(
                f"OVER THE LIMIT: {outcome.max_accepted_1s} requests accepted within one second"
            )
    except BaseException:
        if consumers is not None:
            print(consumers.log_tail(), file=sys.stderr)
        raise
    finally:
        if consumers is not None:
            await consumers.stop()
            if outcome.errors:
                print(consumers.log_tail(), file=sys.stderr)
        fake.stop()
        await delete_topics(prefix)
        await drop_database(database)
        if outcome.errors or cfg.keep_logs:
            outcome.notes.append(f"logs: {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    return outcome


async def wait_for(done: Callable[[], bool], consumers: Consumers, timeout_s: float) -> bool:
    """Poll `done()` until it holds (True), the consumer exits or the time is up (False)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if consumers.exited() or time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True


def _seq(delivery: Delivery) -> int | None:
    match = TOKEN.search(str(delivery.body.get("subject", "")))
    return int(match.group(1)) if match else None


def _to(entry: Any) -> str:
    to = entry.get("to") if isinstance(entry, dict) else None
    return str(to[0] if isinstance(to, list) and to else to)


def analyse(
    outcome: Outcome,
    load: Load,
    published_s: Sequence[float],
    requests: Sequence[Request],
    deliveries: Sequence[Delivery],
    started_s: float,
) -> None:
    """Code latencies, welcomes still queued at the last code, and the provider's side, from
    what the fake saw."""
    codes = {code_recipient(index): index for index in range(len(published_s))}
    code_at: dict[int, Delivery] = {}
    code_counts: Counter[int] = Counter()
    welcome_counts: Counter[int] = Counter()
    welcome_arrivals: list[float] = []
    welcome_times: list[float] = []
    strangers = 0
    for delivery in deliveries:
        to = _to(delivery.body)
        if to in codes:
            index = codes[to]
            code_counts[index] += 1
            code_at.setdefault(index, delivery)
        elif (seq := _seq(delivery)) is not None and 0 <= seq < load.welcomes:
            welcome_counts[seq] += 1
            welcome_arrivals.append(delivery.arrived_s)
            welcome_times.append(delivery.at_s)
        else:
            strangers += 1
    outcome.codes_sent = len(code_at)
    outcome.welcomes_sent = len(welcome_counts)
    twice = sum(n - 1 for n in (*code_counts.values(), *welcome_counts.values()) if n > 1)
    if twice:
        outcome.errors.append(f"DUPLICATES: {twice} emails delivered more than once")
    if strangers:
        outcome.errors.append(f"{strangers} deliveries match no published job")
    if outcome.codes_sent < len(published_s):
        outcome.errors.append(f"MISSING: {len(published_s) - outcome.codes_sent} codes never sent")
    if outcome.welcomes_sent < load.welcomes:
        outcome.errors.append(f"MISSING: {load.welcomes - outcome.welcomes_sent} welcomes never sent")
    outcome.latencies_s = [
        round(code_at[i].at_s - published_s[i], 3) for i in range(len(published_s)) if i in code_at
    ]
    outcome.p50_s = _percentile(outcome.latencies_s, 0.50)
    outcome.p99_s = _percentile(outcome.latencies_s, 0.99)
    outcome.max_s = max(outcome.latencies_s, default=None)
    if code_at:
        slowest = max(code_at, key=lambda i: code_at[i].at_s - published_s[i])
        outcome.notes.append(
            f"slowest: code {slowest + 1} of {len(published_s)}, "
            f"published {published_s[slowest] - published_s[0]:.1f} s after the first"
        )
    if code_at:
        # The last code's call: welcomes that arrived in it or before it were sent with it.
        last_call_s = max(d.arrived_s for d in code_at.values())
        outcome.welcomes_unsent_at_last_code = load.welcomes - sum(
            1 for at in welcome_arrivals if at <= last_call_s
        )
    welcome_times.sort()
    if len(welcome_times) > 1 and welcome_times[-1] > welcome_times[0]:
        outcome.welcomes_per_s = (len(welcome_times) - 1) / (welcome_times[-1] - welcome_times[0])
    if deliveries:
        outcome.first_send_after_s = min(d.at_s for d in deliveries) - started_s
    provider_figures(outcome, requests, set(codes))


def provider_figures(outcome: Outcome, requests: Sequence[Request], code_recipients: set[str]) -> None:
    """Requests, 429s, the mean batch, and whether a code ever rode behind a welcome in a call."""
    outcome.requests = len(requests)
    outcome.rate_limited = sum(1 for r in requests if r.status == 429)
    answered = [r.emails for r in requests if r.status == 200]
    if answered:
        outcome.mean_batch = sum(answered) / len(answered)
    for request in requests:
        if request.status != 200 or request.path != BATCH_PATH or not isinstance(request.body, list):
            continue
        is_code = [_to(entry) in code_recipients for entry in request.body]
        if any(is_code):
            outcome.calls_with_codes += 1
            first_welcome = is_code.index(False) if False in is_code else len(is_code)
            outcome.codes_behind_welcomes += sum(is_code[first_welcome:])


def relate(outcomes: list[Outcome], cfg: Config) -> None:
    """The baseline's p99 over each worker scenario's, and the goal's verdict."""
    baseline = next((o for o in outcomes if o.scenario.side == "loop"), None)
    for o in outcomes:
        if o.scenario.side != "worker":
            continue
        if baseline is not None and baseline.p99_s and o.p99_s:
            o.speedup = baseline.p99_s / o.p99_s
        met = (
            not o.errors
            and o.p99_s is not None
            and o.p99_s <= GOAL_P99_S
            and o.codes_sent == o.codes == cfg.load.codes
            and bool(o.welcomes_unsent_at_last_code)
        )
        if cfg.smoke:
            o.goal = "smoke: not judged"
        else:
            o.goal = "met" if met else "NOT MET"
        if o.welcomes_unsent_at_last_code == 0:
            o.notes.append("no welcome was left queued when the last code went out: nothing proved")


# ------------------------------------------------------------------------------ the baseline


async def loop_main(opts: argparse.Namespace) -> None:
    """One topic in offset order, batch calls of up to `batch_max` in that order, one call per
    slot of SLOT_SPAN / limit s, a commit after each call: a single-lane worker's order."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(signum, stop.set)
    renderer = Renderer(find_templates(REPO_ROOT))
    period_s = SLOT_SPAN / opts.limit_per_s
    consumer = AIOKafkaConsumer(
        opts.topic,
        bootstrap_servers=KAFKA,
        group_id=opts.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=opts.batch_max,
    )
    http = httpx.AsyncClient(
        base_url=opts.resend_url, timeout=httpx.Timeout(10.0), headers={"Authorization": f"Bearer {API_KEY}"}
    )
    await consumer.start()
    # Open the connection first (the fake answers 404 and counts nothing): a first call that
    # also connects would arrive late, and the one after it too early for the rolling second.
    await http.post("/warm-up")
    waiting: deque[Any] = deque()  # fetched records, in the order fetched
    next_slot_s = 0.0
    sent = limited = 0
    log.info("loop ready: batches of %d, one call every %.2f s", opts.batch_max, period_s)
    try:
        while not stop.is_set():
            if len(waiting) < 4 * opts.batch_max:
                wait_ms = 100 if waiting else 500
                fetched = await consumer.getmany(timeout_ms=wait_ms, max_records=opts.batch_max)
                for records in fetched.values():
                    waiting.extend(records)
            if not waiting or time.time() < next_slot_s - 0.05:
                if waiting:
                    await asyncio.sleep(max(0.0, next_slot_s - 0.05 - time.time()))
                continue
            batch = [waiting.popleft() for _ in range(min(opts.batch_max, len(waiting)))]
            entries = []
            for record in batch:
                job = json.loads(record.value)
                subject, html, text = renderer.render(job)
                entries.append(
                    {"from": EMAIL_FROM, "to": [job["to"]], "subject": subject, "html": html, "text": text}
                )
            # Encoded before the slot: the call leaves as soon as the slot begins.
            body = json.dumps(entries).encode()
            headers = {
                "Content-Type": "application/json",
                "Idempotency-Key": f"loop-{uuid.uuid4().hex}",
                "x-batch-validation": "permissive",
            }
            while True:
                await asyncio.sleep(max(0.0, next_slot_s - time.time()))
                next_slot_s = time.time() + period_s
                response = await http.post(BATCH_PATH, content=body, headers=headers)
                if response.status_code != 429:
                    response.raise_for_status()
                    break
                limited += 1
                next_slot_s = max(next_slot_s, time.time() + float(response.headers.get("retry-after", "1")))
            sent += len(batch)
            offsets: dict[TopicPartition, int] = {}
            for record in batch:
                tp = TopicPartition(record.topic, record.partition)
                offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
            await consumer.commit(offsets)
    finally:
        await consumer.stop()
        await http.aclose()
        log.info("loop stopped: %d emails sent, %d calls answered 429", sent, limited)


def run_loop_process(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.priority _loop")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--resend-url", required=True)
    parser.add_argument("--batch-max", type=int, required=True)
    parser.add_argument("--limit-per-s", type=int, required=True)
    opts = parser.parse_args(argv)
    try:
        import uvloop  # the worker runs on uvloop too
    except ImportError:
        asyncio.run(loop_main(opts))
    else:
        uvloop.run(loop_main(opts))


# ------------------------------------------------------------------------------ report


def table(outcomes: list[Outcome]) -> str:
    head = (
        "| scenario | consumer | welcomes on | codes sent | code latency p50 / p99 / max s "
        "| baseline p99 ÷ p99 | welcomes unsent at the last code | welcomes sent | welcomes/s "
        "| requests | 429 | max accepted in 1 s | mean batch | codes behind a welcome in a call "
        f"| goal: p99 ≤ {GOAL_P99_S:g} s | notes |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n"
    )
    rows = []
    for o in outcomes:
        s = o.scenario
        notes = [f"**{e}**" for e in o.errors] + o.notes
        latency = " / ".join(_fmt(v, 2) for v in (o.p50_s, o.p99_s, o.max_s))
        unsent = "-" if o.welcomes_unsent_at_last_code is None else f"{o.welcomes_unsent_at_last_code:,}"
        rows.append(
            f"| {s.name} | {s.side} | {s.welcomes_on} | {o.codes_sent} / {o.codes} | {latency} "
            f"| {_fmt(o.speedup, 0) + ' x' if o.speedup else '-'} | {unsent} "
            f"| {o.welcomes_sent:,} / {o.welcomes:,} | {_fmt(o.welcomes_per_s)} | {o.requests:,} "
            f"| {o.rate_limited} | {o.max_accepted_1s} | {_fmt(o.mean_batch)} "
            f"| {o.codes_behind_welcomes} in {o.calls_with_codes} calls | {o.goal or '-'} "
            f"| {'; '.join(notes)} |"
        )
    return head + "\n".join(rows) + "\n"


def write_markdown(cfg: Config, outcomes: list[Outcome], path: Path) -> None:
    info = machine()
    load = cfg.load
    scenario_lines = "\n".join(f"- `{s.name}`: {s.summary}" for s in cfg.scenarios)
    failures = [f"- {o.scenario.name}: {e}" for o in outcomes for e in o.errors]
    text = f"""# Codes first: sign-in codes behind a burst of welcome emails

Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{cfg.command}`.

- Machine: {info["cores"]} cores ({info["cpu"]}), {info["memory"]}, Python {info["python"]}.
- Servers: Kafka {info["kafka"]} at {KAFKA} and the store at {MONGODB_URL} (FerretDB on
  SQLite, as `make services` starts it); the provider is the local fake Resend
  (tests/fakes/resend_server.py) in the benchmark's own process, refusing any request
  beyond {load.limit_per_s} in a rolling second (429), {load.latency_ms} ms latency.
- Worker: `faststream run streams.app:app` in {cfg.worker_label}, one process, with
  RESEND_RATE_LIMIT_PER_S={load.limit_per_s}, RESEND_BATCH_MAX={load.batch_max}, HTTP_PORT=0
  and the other settings at their defaults ({PARTITIONS} partitions per topic).
- Baseline: one aiokafka consumer of one topic, sending the records in the order fetched
  (offset order per partition), rendered with the worker's templates, as batch calls of up
  to {load.batch_max}, one call every {SLOT_SPAN:g} / {load.limit_per_s} s, committing after each call.
- Load: {load.describe()}. The codes are published once the first welcome has reached
  the provider.

Goal (issue 11): with 10,000 welcome emails queued and the provider at 2 requests/s, an
OTP published afterwards is sent within {GOAL_P99_S:g} s, p99 over 50 codes.

Scenarios:

{scenario_lines}

{table(outcomes)}
How to read it:

- **code latency**: from the moment before a code's publish call to the fake accepting it
  (its delivery record), per code; p50, p99 and max over the codes (nearest rank: over 50
  codes the p99 is the slowest). The notes say when the slowest code was published: early
  on, it met a backlog of the consumer's own (B: welcomes on `email-jobs` not yet moved).
- **baseline p99 ÷ p99**: how many times sooner the worker's slowest codes go out than the
  single-lane loop's.
- **welcomes unsent at the last code**: welcomes not yet at the provider when the last
  code's call arrived (those in that same call count as sent). Above zero, the codes were
  published into a real backlog, not to an idle provider.
- **welcomes/s**: welcomes at the fake from the first to the last; the ceiling is
  {load.limit_per_s} x {load.batch_max} / {SLOT_SPAN:g} = {load.ceiling_per_s:.0f}/s.
- **requests**, **429**: calls at the fake, and those it refused over the limit; **max
  accepted in 1 s**: the most it accepted within any rolling second (at most
  {load.limit_per_s}); **mean batch**: emails per call answered 200.
- **codes behind a welcome in a call**: codes placed after a welcome within their batch
  call, over the calls that carried a code (the worker puts codes first in every batch).
- Checks: every code and welcome sent exactly once (by recipient, and by the number in
  the welcome's subject), no second over the limit, the consumer alive to the end.
"""
    if failures:
        text += "\n## Failed checks\n\n" + "\n".join(failures) + "\n"
    path.write_text(text)


def write_json(cfg: Config, outcomes: list[Outcome], path: Path) -> None:
    document = {
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": cfg.command,
        "machine": machine(),
        "worker": cfg.worker_label,
        "kafka": KAFKA,
        "store": MONGODB_URL,
        "load": asdict(cfg.load),
        "goal_p99_s": GOAL_P99_S,
        "outcomes": [asdict(o) for o in outcomes],
    }
    path.write_text(json.dumps(document, indent=1) + "\n")


# ------------------------------------------------------------------------------ main


async def run_all(cfg: Config) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    await check_servers()
    began = time.monotonic()
    outcomes = []
    for i, scenario in enumerate(cfg.scenarios, 1):
        print(f"==> [{i}/{len(cfg.scenarios)}] {scenario.name}: {scenario.summary}", flush=True)
        outcome = await run_scenario(cfg, scenario)
        print(
            f"    codes {outcome.codes_sent}/{outcome.codes}, p50/p99/max "
            f"{_fmt(outcome.p50_s, 2)}/{_fmt(outcome.p99_s, 2)}/{_fmt(outcome.max_s, 2)} s, "
            f"{_fmt(outcome.welcomes_unsent_at_last_code, 0)} welcomes unsent at the last code, "
            f"welcomes {outcome.welcomes_sent}/{outcome.welcomes} at {_fmt(outcome.welcomes_per_s)}/s, "
            f"{outcome.requests} requests, {outcome.rate_limited} answered 429"
            + "".join(f"\n    FAILED: {e}" for e in outcome.errors),
            flush=True,
        )
        outcomes.append(outcome)
    relate(outcomes, cfg)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    markdown, raw = cfg.out.with_suffix(".md"), cfg.out.with_suffix(".json")
    write_markdown(cfg, outcomes, markdown)
    write_json(cfg, outcomes, raw)
    print()
    print(table(outcomes))
    for o in outcomes:
        if o.speedup:
            print(f"{o.scenario.name}: p99 {_fmt(o.p99_s, 2)} s, {_fmt(o.speedup, 0)} x the baseline's")
    print(f"wrote {markdown} and {raw.name} in {time.monotonic() - began:.0f} s")
    failed = [o for o in outcomes if o.errors]
    if failed:
        names = ", ".join(o.scenario.name for o in failed)
        print(f"FAILED CHECKS in {len(failed)} scenarios: {names}", file=sys.stderr)
        return 1
    return 0


def parse_config(argv: list[str]) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.priority",
        description="Sign-in codes behind a burst of welcome emails: the worker's lanes against one topic.",
    )
    parser.add_argument("--smoke", action="store_true", help="300 welcomes, 5 codes, batches of 20")
    names = [s.name for s in SCENARIOS]
    parser.add_argument("--scenarios", help=f"comma-separated, of {', '.join(names)} (default: all)")
    parser.add_argument("--welcomes", type=int, help="welcome emails queued first")
    parser.add_argument("--codes", type=int, help="codes published afterwards")
    parser.add_argument("--codes-over-s", type=float, help="the span the codes are spread over")
    parser.add_argument("--batch-max", type=int, help="RESEND_BATCH_MAX, and the baseline's batch")
    parser.add_argument(
        "--worker-dir",
        type=Path,
        default=Path(os.environ.get("PRIORITY_WORKER_DIR") or REPO_ROOT),
        help="the checkout whose worker runs (default: this one, or $PRIORITY_WORKER_DIR)",
    )
    parser.add_argument("--worker-label", help="how the report names the worker (default: git describe)")
    parser.add_argument("--out", type=Path, help="output stem: STEM.md and STEM.json")
    parser.add_argument("--keep-logs", action="store_true", help="keep each consumer's log in /tmp")
    args = parser.parse_args(argv)
    load = SMOKE if args.smoke else FULL
    overrides = {
        "welcomes": args.welcomes,
        "codes": args.codes,
        "codes_over_s": args.codes_over_s,
        "batch_max": args.batch_max,
    }
    load = replace(load, **{k: v for k, v in overrides.items() if v is not None})
    chosen = list(SCENARIOS)
    if args.scenarios:
        wanted = [n.strip() for n in args.scenarios.split(",") if n.strip()]
        if unknown := [n for n in wanted if n not in names]:
            parser.error(f"unknown scenarios {unknown}; known: {', '.join(names)}")
        chosen = [s for s in SCENARIOS if s.name in wanted]
    default_out = DEFAULT_OUT.with_name("priority-smoke") if args.smoke else DEFAULT_OUT
    return Config(
        scenarios=tuple(chosen),
        load=load,
        worker_dir=args.worker_dir.resolve(),
        worker_label=args.worker_label or git_label(args.worker_dir.resolve()),
        out=(args.out or default_out).resolve(),
        keep_logs=args.keep_logs,
        command=" ".join(["python -m benchmarks.priority", *argv]),
        smoke=args.smoke,
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["_loop"]:
        run_loop_process(argv[1:])
        return 0
    return asyncio.run(run_all(parse_config(argv)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
