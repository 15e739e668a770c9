"""Ad jobs within OpenAI's rate limits: the worker's model budget against a loop with none.

    make bench-ads                                        # 500 jobs a side, ~20 min
    .venv/bin/python -m benchmarks.ad_budget --smoke      # 30 jobs at 120 RPM, ~2 min
    .venv/bin/python -m benchmarks.ad_budget --sides worker --jobs 200

The goal (issue 13, "Model budgets for the group"): 500 ad jobs, the model limited to 60
requests and 40,000 tokens a minute, 2 worker processes with AD_CONCURRENCY=8: 0 attempts
used by rate limits, at most 2 % of calls answered 429, all 500 succeeded.

Needs `make services`. Each side gets a fresh topic prefix, consumer group and database,
and its own fake OpenAI (tests/fakes/openai_server.py, in this process: its own account)
limited per rolling minute as OpenAI limits one (tests/fakes/openai_limits.py): requests,
and tokens counted as OpenAI's limiter does, the prompt's characters / 4 plus the
`max_completion_tokens` asked for. It answers with the `good` behaviour (copy of the size
the job asks for) at once. The jobs are a mix of the four platforms with 1-3 variants,
one user each (spread over the 3 partitions of `ad-jobs`):

- `worker`: the real command, `faststream run streams.app:app`, 2 processes, set up by
  environment variables only: OPENAI_RPM, OPENAI_TPM (the fake's limits), AD_CONCURRENCY=8,
  the AD_RETRY_* defaults. The jobs are published first, then both processes start (the
  first to join takes every partition until the second comes).
- `baseline`: a hand-written loop (this file, `python -m benchmarks.ad_budget _loop ...`):
  the same requests (the worker's prompt, schema and `max_completion_tokens`) through the
  OpenAI SDK, 2 x 8 = 16 jobs at once and no budget; the SDK retries a 429 twice after its
  `retry-after` (its default); a call still refused uses one of the job's attempts, and the
  job comes back after the worker's backoff (`plan_retry` with the AD_RETRY_* defaults),
  as the worker's retry topic would, up to 5 attempts.

The sides run at the same time (each has its own account at its own fake; both mostly
wait). Per side: jobs succeeded; the duration, from the first call at the fake to the last
answered one; calls at the fake and those answered 429 (by limit); attempts used by rate
limits (worker: records on `ad-jobs.retry` or `ad-jobs.dlq` with error class
`RateLimited`); tokens, as the answers' `usage` reported them and as the limiter charged
them; then the worker's figures over the baseline's. Results go to
benchmarks/results/ad_budget.md and ad_budget.json (`--smoke`: ad_budget-smoke.*). A side
whose consumer dies, or that misses its deadline, is a failed check: printed loudly, exit
status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.throughput import (
    KAFKA,
    MONGODB_URL,
    PARTITIONS,
    REPO_ROOT,
    Consumers,
    _fmt,
    check_servers,
    create_topic,
    delete_topics,
    drop_database,
    git_label,
    machine,
    worker_argv,
)
from processors.ads.jobs import AdJob
from streams.dlq import read_dead_letters
from streams.producer import JobPublisher
from streams.retry import headers as h
from streams.topics import TopicNames
from tests.fakes.openai_limits import RateLimits
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.worker import cli_process

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "ad_budget"
PLATFORMS = ("GOOGLE_SEARCH", "META_FEED", "LINKEDIN_SPONSORED", "X_POST")
PRODUCTS = (
    ("Lumen desk lamp", "A dimmable LED desk lamp with no flicker. Folds flat."),
    ("Trailhead bottle", "An insulated steel bottle that keeps water cold for a day."),
    ("Quiet keys", "A low-profile mechanical keyboard with silent switches."),
    ("Fern planter", "A self-watering ceramic planter for small apartments."),
)
AUDIENCES = ("students who study late", "weekend hikers", "remote workers", "first-time plant owners")
TONES = ("warm", "playful", "confident", "calm")
API_KEY = "sk-bench-key"
MAX_ATTEMPTS = 5  # AD_RETRY_MAX_ATTEMPTS's default
SDK_RETRIES = 2  # the OpenAI SDK's default
POLL_S = 2.0
BUDGET_LINE = re.compile(r"model budget: (\d+) calls, (\d+) paused by a 429, ([0-9.]+) s waited")

log = logging.getLogger("ad_budget")


@dataclass(frozen=True)
class Load:
    jobs: int
    rpm: int
    tpm: int
    processes: int = 2
    concurrency: int = 8  # AD_CONCURRENCY, per process

    @property
    def deadline_s(self) -> float:
        """From the consumers' start until every job must have ended: twice the time the
        limits allow (2,000 tokens a call at most), and two minutes to start."""
        per_call_s = max(60 / self.rpm, 2_000 * 60 / self.tpm)
        return 120 + 2 * self.jobs * per_call_s

    def describe(self) -> str:
        return (
            f"{self.jobs} ad jobs; the model limited to {self.rpm} requests and {self.tpm:,} tokens a "
            f"minute; {self.processes} processes x AD_CONCURRENCY={self.concurrency}"
        )


FULL = Load(jobs=500, rpm=60, tpm=40_000)
SMOKE = Load(jobs=30, rpm=120, tpm=120_000)
SIDES = ("worker", "baseline")


@dataclass(frozen=True)
class Config:
    sides: tuple[str, ...]
    load: Load
    out: Path
    keep_logs: bool
    command: str
    smoke: bool


@dataclass
class Outcome:
    side: str
    jobs: int = 0
    succeeded: int = 0
    failed: int = 0
    duration_s: float | None = None  # first call at the fake to the last answered
    calls: int = 0  # at the fake, refused ones included
    accepted: int = 0
    rate_limited: int = 0
    refused_on: dict[str, int] = field(default_factory=dict)
    attempts_rate_limited: int = 0
    prompt_tokens: int = 0  # the answers' usage
    completion_tokens: int = 0
    tokens_charged: int = 0  # by the limiter: prompt estimate + max_completion_tokens
    most_requests_in_a_minute: int = 0
    most_tokens_in_a_minute: int = 0
    budget: list[dict[str, float]] = field(default_factory=list)  # per worker process
    goal: str | None = None
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cost_report: str | None = None  # `python -m streams.cli ads cost` on the worker's store

    @property
    def share_429(self) -> float | None:
        return self.rate_limited / self.calls if self.calls else None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def calls_per_min(self) -> float | None:
        return 60 * self.accepted / self.duration_s if self.duration_s else None


def make_jobs(tag: str, count: int) -> list[AdJob]:
    jobs = []
    for i in range(count):
        name, description = PRODUCTS[i % len(PRODUCTS)]
        jobs.append(
            AdJob.model_validate(
                {
                    "job_id": f"{tag}-{i}",
                    "user_id": f"{tag}-user-{i}",
                    "product": {"name": f"{name} {i}", "description": description},
                    "audience": AUDIENCES[i % len(AUDIENCES)],
                    "tone": TONES[(i // 4) % len(TONES)],
                    "platform": PLATFORMS[i % len(PLATFORMS)],
                    "variants": 1 + (i // 4) % 3,
                }
            )
        )
    return jobs


def limited_fake(load: Load) -> FakeOpenAI:
    return FakeOpenAI(limits=RateLimits(requests_per_min=load.rpm, tokens_per_min=load.tpm)).start()


def fake_figures(outcome: Outcome, fake: FakeOpenAI) -> None:
    limits = fake.limits
    assert limits is not None
    counts = limits.counts
    admitted = limits.admitted()
    refused = limits.refused()
    outcome.accepted = counts.accepted
    outcome.rate_limited = counts.rate_limited
    outcome.refused_on = {k: v for k, v in counts.refused.items() if v}
    outcome.calls = counts.accepted + counts.rate_limited
    outcome.prompt_tokens = counts.prompt_tokens
    outcome.completion_tokens = counts.completion_tokens
    outcome.tokens_charged = counts.tokens_charged
    outcome.most_requests_in_a_minute, outcome.most_tokens_in_a_minute = limits.most_in_any_window()
    if admitted:
        first_s = min([admitted[0][0], *refused[:1]])
        outcome.duration_s = admitted[-1][0] - first_s


# ------------------------------------------------------------------------------ the worker


def worker_env(
    load: Load, prefix: str, group: str, database: str, fake: FakeOpenAI, outbox: Path
) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_GROUP_ID": group,
        "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
        "MONGODB_URL": MONGODB_URL,
        "MONGODB_DATABASE": database,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_MODEL": fake.model,
        "OPENAI_RPM": str(load.rpm),
        "OPENAI_TPM": str(load.tpm),
        "AD_CONCURRENCY": str(load.concurrency),
        "OUTBOX_DIR": str(outbox),
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": "0",
        "LOG_LEVEL": "INFO",
    }


async def results_by_job(topic: str) -> dict[str, str]:
    """The latest status per job_id on `ad-results`."""
    statuses: dict[str, str] = {}
    for record in await read_dead_letters(KAFKA, topic):
        result = json.loads(record.record.value)
        statuses[result["job_id"]] = result["status"]
    return statuses


async def rate_limited_attempts(topics: TopicNames) -> int:
    """Records that a rate limit sent to the retry topic or the DLQ: each cost an attempt."""
    records = [
        *await read_dead_letters(KAFKA, topics.ad_jobs.retry),
        *await read_dead_letters(KAFKA, topics.ad_jobs.dlq),
    ]
    return sum(1 for r in records if r.record.headers.get(h.ERROR_CLASS) == "RateLimited")


# What the report prices the fake model's tokens at: OpenAI's list price of gpt-4o-mini
# (USD per million tokens), as an example; the fake itself is free.
EXAMPLE_PRICES = {"input_per_1m": 0.15, "output_per_1m": 0.60}


async def cost_report(database: str, model: str) -> str:
    """The operator's cost report of the run (`ads cost`), from the worker's store."""
    returncode, out, err = await cli_process(
        "ads",
        "cost",
        "--since",
        "3h",
        env={"MONGODB_DATABASE": database, "OPENAI_PRICES": json.dumps({model: EXAMPLE_PRICES})},
    )
    return out if returncode == 0 else f"(ads cost failed with {returncode}: {err.strip()[:300]})"


async def run_worker(cfg: Config) -> Outcome:
    load = cfg.load
    tag = f"a{uuid.uuid4().hex[:8]}"
    prefix = f"{tag}."
    topics = TopicNames.with_prefix(prefix)
    group, database = f"bench-{tag}", f"bench_{tag}"
    log_dir = Path(tempfile.mkdtemp(prefix="bench-ad-budget-worker-"))
    outcome = Outcome("worker", jobs=load.jobs)
    fake = limited_fake(load)
    consumers: Consumers | None = None
    try:
        await create_topic(topics.ad_jobs.main)
        await create_topic(topics.ad_results)
        jobs = make_jobs(tag, load.jobs)
        async with JobPublisher(KAFKA, topics, client_options={"linger_ms": 10}) as publisher:
            await asyncio.gather(*(publisher.ad(job) for job in jobs))
        env = worker_env(load, prefix, group, database, fake, log_dir / "outbox")
        consumers = Consumers(worker_argv(), REPO_ROOT, env, log_dir, load.processes)
        deadline = time.monotonic() + load.deadline_s
        wanted = {job.job_id for job in jobs}
        statuses: dict[str, str] = {}
        last_report = time.monotonic()
        while True:
            statuses = await results_by_job(topics.ad_results)
            if wanted <= statuses.keys():
                break
            if consumers.exited():
                outcome.errors.append(f"a worker exited early (exit status {consumers.exited()})")
                break
            if time.monotonic() > deadline:
                outcome.errors.append(f"deadline: {len(statuses)} of {load.jobs} jobs ended")
                break
            if time.monotonic() - last_report > 60:
                last_report = time.monotonic()
                print(f"    worker: {len(statuses)}/{load.jobs} jobs ended", flush=True)
            await asyncio.sleep(POLL_S)
        await consumers.stop()
        ended = Counter(statuses.get(job_id) for job_id in wanted)
        outcome.succeeded, outcome.failed = ended["succeeded"], ended["failed"]
        outcome.attempts_rate_limited = await rate_limited_attempts(topics)
        fake_figures(outcome, fake)
        outcome.cost_report = await cost_report(database, fake.model)
        for path in consumers.logs:
            for calls, paused, waited in BUDGET_LINE.findall(path.read_text("utf-8", "replace")):
                outcome.budget.append({"calls": int(calls), "paused": int(paused), "waited_s": float(waited)})
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


# ------------------------------------------------------------------------------ the baseline


async def run_baseline(cfg: Config) -> Outcome:
    load = cfg.load
    tag = f"b{uuid.uuid4().hex[:8]}"
    log_dir = Path(tempfile.mkdtemp(prefix="bench-ad-budget-loop-"))
    outcome = Outcome("baseline", jobs=load.jobs)
    fake = limited_fake(load)
    jobs_file, result_file, log_file = log_dir / "jobs.jsonl", log_dir / "result.json", log_dir / "loop.log"
    jobs_file.write_text("".join(job.model_dump_json() + "\n" for job in make_jobs(tag, load.jobs)))
    argv = [
        sys.executable,
        "-m",
        "benchmarks.ad_budget",
        "_loop",
        f"--base-url={fake.url}",
        f"--model={fake.model}",
        f"--jobs={jobs_file}",
        f"--concurrency={load.processes * load.concurrency}",
        f"--out={result_file}",
    ]
    try:
        with log_file.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(*argv, cwd=REPO_ROOT, stdout=out, stderr=out)
        try:
            await asyncio.wait_for(proc.wait(), timeout=load.deadline_s * 3)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            outcome.errors.append("deadline: the loop did not finish")
        if proc.returncode != 0 or not result_file.exists():
            outcome.errors.append(f"the loop exited with {proc.returncode}")
            print(log_file.read_text("utf-8", "replace")[-4000:], file=sys.stderr)
        else:
            result = json.loads(result_file.read_text())
            outcome.succeeded = result["succeeded"]
            outcome.failed = result["failed"]
            outcome.attempts_rate_limited = result["attempts_rate_limited"]
        fake_figures(outcome, fake)
    finally:
        fake.stop()
        if outcome.errors or cfg.keep_logs:
            outcome.notes.append(f"logs: {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    return outcome


async def loop_main(opts: argparse.Namespace) -> None:
    """Every job through the SDK, `concurrency` at once, no budget; a call the SDK's own
    retries could not get through costs an attempt, and the job comes back after the
    worker's backoff."""
    import openai

    from processors.ads.prompt import AdPrompt
    from processors.ads.provider_errors import classify
    from processors.ads.schema import max_output_tokens, response_format
    from processors.errors import TransientError
    from streams.retry.policy import RetryIn, plan_retry
    from streams.settings import AdBackoffSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    policy = AdBackoffSettings().policy()
    prompt = AdPrompt()
    jobs = [AdJob.model_validate_json(line) for line in Path(opts.jobs).read_text().splitlines() if line]
    client = openai.AsyncOpenAI(
        api_key=API_KEY, base_url=opts.base_url, max_retries=SDK_RETRIES, timeout=60.0
    )
    slots = asyncio.Semaphore(opts.concurrency)
    tally: Counter[str] = Counter()

    async def run(job: AdJob) -> None:
        rendered = prompt.render(job)
        # What the worker sends (LangChain's structured output, json_schema): the same
        # messages, schema and output cap.
        request: dict[str, Any] = {
            "model": opts.model,
            "messages": [
                {"role": "system", "content": rendered.system},
                {"role": "user", "content": rendered.user},
            ],
            "response_format": {"type": "json_schema", "json_schema": response_format(job)},
            "max_completion_tokens": max_output_tokens(job),
        }
        for attempt in range(1, MAX_ATTEMPTS + 1):
            async with slots:
                try:
                    await client.chat.completions.create(**request)
                except openai.APIError as error:
                    classified = classify(error)
                    if not isinstance(classified, TransientError):
                        tally["failed"] += 1
                        return
                    if classified.error_class == "RateLimited":
                        tally["attempts_rate_limited"] += 1
                    plan = plan_retry(attempt, classified, policy, random.random())
                else:
                    tally["succeeded"] += 1
                    return
            if not isinstance(plan, RetryIn):
                break
            await asyncio.sleep(plan.delay_ms / 1000)  # the slot is free meanwhile, as in the worker
        tally["failed"] += 1

    began = time.monotonic()
    await asyncio.gather(*(run(job) for job in jobs))
    await client.close()
    log.info("loop done in %.0f s: %s", time.monotonic() - began, dict(tally))
    Path(opts.out).write_text(
        json.dumps({k: tally[k] for k in ("succeeded", "failed", "attempts_rate_limited")}) + "\n"
    )


def run_loop_process(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.ad_budget _loop")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--jobs", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--out", required=True)
    asyncio.run(loop_main(parser.parse_args(argv)))


# ------------------------------------------------------------------------------ report


def judge(outcome: Outcome, load: Load, *, smoke: bool) -> None:
    if outcome.side != "worker":
        return
    share = outcome.share_429 or 0.0
    met = (
        not outcome.errors
        and outcome.attempts_rate_limited == 0
        and share <= 0.02
        and outcome.succeeded == load.jobs
    )
    listed = (
        f"{outcome.attempts_rate_limited} attempts used by rate limits (goal 0), "
        f"{100 * share:.1f} % of calls answered 429 (≤ 2 %), {outcome.succeeded}/{load.jobs} succeeded"
    )
    if smoke:
        outcome.goal = "smoke: not judged"
    else:
        outcome.goal = "met" if met else "NOT MET"
    outcome.notes.insert(0, listed)


def _ratio(worker: float | None, baseline: float | None, digits: int = 2) -> str:
    if worker is None or not baseline:
        return "-"
    return f"{worker / baseline:.{digits}f} x"


def table(outcomes: list[Outcome]) -> str:
    head = (
        "| side | succeeded | failed | duration s | calls | 429 (share) | 429 by limit "
        "| attempts used by rate limits | calls/min | tokens: prompt + completion (usage) "
        "| tokens charged by the limiter | most in a minute: requests / tokens | goal | notes |\n"
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---|\n"
    )
    rows = []
    for o in outcomes:
        share = "-" if o.share_429 is None else f"{100 * o.share_429:.1f} %"
        notes = [f"**{e}**" for e in o.errors] + o.notes
        rows.append(
            f"| {o.side} | {o.succeeded} / {o.jobs} | {o.failed} | {_fmt(o.duration_s, 0)} | {o.calls} "
            f"| {o.rate_limited} ({share}) | {', '.join(f'{k} {v}' for k, v in o.refused_on.items()) or '-'} "
            f"| {o.attempts_rate_limited} | {_fmt(o.calls_per_min)} "
            f"| {o.prompt_tokens:,} + {o.completion_tokens:,} = {o.tokens:,} | {o.tokens_charged:,} "
            f"| {o.most_requests_in_a_minute} / {o.most_tokens_in_a_minute:,} | {o.goal or '-'} "
            f"| {'; '.join(notes)} |"
        )
    by_side = {o.side: o for o in outcomes}
    worker, baseline = by_side.get("worker"), by_side.get("baseline")
    if worker is not None and baseline is not None:
        rows.append(
            f"| worker ÷ baseline | {_ratio(worker.succeeded, baseline.succeeded)} | - "
            f"| {_ratio(worker.duration_s, baseline.duration_s)} | {_ratio(worker.calls, baseline.calls)} "
            f"| {_ratio(worker.share_429, baseline.share_429)} | - "
            f"| {_ratio(worker.attempts_rate_limited, baseline.attempts_rate_limited)} "
            f"| {_ratio(worker.calls_per_min, baseline.calls_per_min)} "
            f"| {_ratio(worker.tokens, baseline.tokens)} "
            f"| {_ratio(worker.tokens_charged, baseline.tokens_charged)} | - | - | |"
        )
    return head + "\n".join(rows) + "\n"


def budget_lines(outcomes: list[Outcome]) -> str:
    lines = []
    for o in outcomes:
        for index, figures in enumerate(o.budget):
            lines.append(
                f"- worker process {index + 1}: {figures['calls']:.0f} calls let through by its budget, "
                f"{figures['paused']:.0f} paused by a 429, {figures['waited_s']:.0f} s waited in all "
                "(summed over its jobs)"
            )
    return "\n".join(lines)


def write_markdown(cfg: Config, outcomes: list[Outcome], path: Path) -> None:
    info = machine()
    load = cfg.load
    failures = [f"- {o.side}: {e}" for o in outcomes for e in o.errors]
    text = f"""# Ad jobs within OpenAI's rate limits: the model budget against no budget

Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{cfg.command}`, worker {git_label(REPO_ROOT)}.

- Machine: {info["cores"]} cores ({info["cpu"]}), {info["memory"]}, Python {info["python"]}.
- Servers: Kafka {info["kafka"]} at {KAFKA} and the store at {MONGODB_URL} (FerretDB on SQLite).
- The model: a fake OpenAI per side (tests/fakes/openai_server.py, `good` answers at once),
  limited to {load.rpm} requests and {load.tpm:,} tokens per rolling minute
  (tests/fakes/openai_limits.py: a request counts its characters / 4 plus its
  `max_completion_tokens`, as OpenAI's limiter counts it; over a limit: 429 with
  `retry-after`).
- Load: {load.describe()}; the jobs mix the four platforms and 1-3 variants, one user each.
- `worker`: `faststream run streams.app:app`, {load.processes} processes, OPENAI_RPM={load.rpm},
  OPENAI_TPM={load.tpm}, AD_CONCURRENCY={load.concurrency}, the other settings at their
  defaults; jobs published before the processes start.
- `baseline`: the same requests through the OpenAI SDK, {load.processes * load.concurrency} at once,
  no budget; the SDK retries a 429 twice (its default), then the job uses an attempt and
  comes back after the worker's backoff, up to {MAX_ATTEMPTS} attempts.

Goal (issue 13): 500 ad jobs, the model limited to 60 RPM and 40,000 TPM, 2 processes,
AD_CONCURRENCY=8: 0 attempts used by rate limits; ≤ 2 % of calls answered 429; all 500 succeeded.

{table(outcomes)}
{budget_lines(outcomes)}

How to read it:

- **duration**: from the first call at the fake to the last one it answered; **calls/min**:
  answered calls over that time.
- **calls**: requests at the fake, SDK retries and 429s included; **429 by limit**: which
  limit refused them (`requests` or `tokens`).
- **attempts used by rate limits**: worker, records on `ad-jobs.retry` or `ad-jobs.dlq`
  with error class `RateLimited` (a job's wait for the budget that ran past its time also
  counts); baseline, calls still refused after the SDK's retries.
- **tokens (usage)**: what the answers reported (the fake reports its prompt estimate as
  the prompt's tokens); **charged by the limiter**: what counted against the TPM limit,
  the prompt estimate plus the `max_completion_tokens` asked for, answers or not.
- **most in a minute**: the most requests and tokens the fake admitted in any rolling
  minute (never above the limits: it refuses the rest).
"""
    for o in outcomes:
        if o.cost_report:
            text += (
                f"\n## Cost report of the {o.side} run\n\n`python -m streams.cli ads cost --since 3h` "
                f"on its store, with `OPENAI_PRICES` pricing the fake model at "
                f"{EXAMPLE_PRICES['input_per_1m']} / {EXAMPLE_PRICES['output_per_1m']} USD per million "
                f"input / output tokens (gpt-4o-mini's list price, as an example):\n\n"
                f"```\n{o.cost_report.rstrip()}\n```\n"
            )
    if failures:
        text += "\n## Failed checks\n\n" + "\n".join(failures) + "\n"
    path.write_text(text)


def write_json(cfg: Config, outcomes: list[Outcome], path: Path) -> None:
    document = {
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": cfg.command,
        "machine": machine(),
        "worker": git_label(REPO_ROOT),
        "load": asdict(cfg.load),
        "outcomes": [
            {**asdict(o), "share_429": o.share_429, "tokens": o.tokens, "calls_per_min": o.calls_per_min}
            for o in outcomes
        ],
    }
    path.write_text(json.dumps(document, indent=1) + "\n")


# ------------------------------------------------------------------------------ main


async def run_all(cfg: Config) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    await check_servers()
    began = time.monotonic()
    print(f"==> {cfg.load.describe()}; sides {', '.join(cfg.sides)}, at the same time", flush=True)
    runners = {"worker": run_worker, "baseline": run_baseline}
    outcomes = list(await asyncio.gather(*(runners[side](cfg) for side in cfg.sides)))
    for o in outcomes:
        judge(o, cfg.load, smoke=cfg.smoke)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    markdown, raw = cfg.out.with_suffix(".md"), cfg.out.with_suffix(".json")
    write_markdown(cfg, outcomes, markdown)
    write_json(cfg, outcomes, raw)
    print()
    print(table(outcomes))
    print(budget_lines(outcomes))
    print(f"wrote {markdown} and {raw.name} in {time.monotonic() - began:.0f} s")
    failed = [o for o in outcomes if o.errors]
    if failed:
        print(f"FAILED CHECKS: {', '.join(o.side for o in failed)}", file=sys.stderr)
        return 1
    return 0


def parse_config(argv: list[str]) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ad_budget",
        description="Ad jobs within OpenAI's rate limits: the worker's model budget against no budget.",
    )
    parser.add_argument("--smoke", action="store_true", help="30 jobs at 120 RPM / 120,000 TPM")
    parser.add_argument("--sides", help=f"comma-separated, of {', '.join(SIDES)} (default: both)")
    parser.add_argument("--jobs", type=int, help="ad jobs per side")
    parser.add_argument("--rpm", type=int, help="the fake's requests per minute = OPENAI_RPM")
    parser.add_argument("--tpm", type=int, help="the fake's tokens per minute = OPENAI_TPM")
    parser.add_argument("--out", type=Path, help="output stem: STEM.md and STEM.json")
    parser.add_argument("--keep-logs", action="store_true", help="keep the consumers' logs in /tmp")
    args = parser.parse_args(argv)
    load = SMOKE if args.smoke else FULL
    overrides = {"jobs": args.jobs, "rpm": args.rpm, "tpm": args.tpm}
    load = replace(load, **{k: v for k, v in overrides.items() if v is not None})
    sides = SIDES
    if args.sides:
        wanted = tuple(s.strip() for s in args.sides.split(",") if s.strip())
        if unknown := [s for s in wanted if s not in SIDES]:
            parser.error(f"unknown sides {unknown}; known: {', '.join(SIDES)}")
        sides = wanted
    default_out = DEFAULT_OUT.with_name("ad_budget-smoke") if args.smoke else DEFAULT_OUT
    return Config(
        sides=sides,
        load=load,
        out=(args.out or default_out).resolve(),
        keep_logs=args.keep_logs,
        command=" ".join(["python -m benchmarks.ad_budget", *argv]),
        smoke=args.smoke,
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["_loop"]:
        run_loop_process(argv[1:])
        return 0
    return asyncio.run(run_all(parse_config(argv)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
