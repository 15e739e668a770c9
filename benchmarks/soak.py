"""Soak: mixed email and ad jobs at a steady rate for 30 minutes on the three-broker
cluster, with a fault every 2 minutes. A benchmark, not part of CI.

    python -m benchmarks.soak                  # 30 minutes, a fault every 120 s
    python -m benchmarks.soak --minutes 6 --fault-every-s 60   # a short look
    python -m benchmarks.soak --smoke          # 2 minutes, two faults

It starts the chaos suite's servers (tests/chaos/cluster.py: three KRaft nodes behind
proxies, a FerretDB of its own, on ports of their own), the fake Resend and the fake
model, and three real worker processes (`faststream run streams.app:app`). Then it
publishes email jobs (every one to a recipient of its own, so each email's content is
unique) and ad jobs at a steady rate, and every `--fault-every-s` injects the next fault
of the cycle:

1. kill -9 of the broker leading most `email-jobs` partitions, restarted 20 s later;
2. a restart (SIGTERM, start) of the next broker in turn;
3. kill -9 of worker slot 3, and a new worker started in its place;
4. the store frozen (SIGSTOP) for 30 s, then killed and restarted;
5. a network partition between the workers and the cluster for 30 s (proxies cut);
6. provider faults for 60 s: 20 % 5xx, 10 % 429 with retry-after, 5 % answered late.

Workers 1 and 2 run the whole time; their RSS is the growth check. At the end it stops
publishing, waits for every job's outcome, and reports throughput per minute, p99
publish-to-send latency (emails, by the fake's arrival time), RSS per minute, and lost
and duplicate counts: emails by content at the fake; ad jobs by their results and the
fake model's calls. Results go to benchmarks/results/soak.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs in the dev set

from processors.ads.jobs import AdJob
from processors.email.jobs import EmailJobModel
from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.chaos.cluster import Cluster, Store, start_session, stop_session
from tests.chaos.faults import (
    FAST_AD_RETRIES,
    FAST_EMAIL_RETRIES,
    ad_results,
    model_calls_by_job,
)
from tests.chaos.scenario import Workers, email_jobs
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.resend_server import FakeResend, FaultMix

RESULTS = Path(__file__).parent / "results"
SAMPLE_EVERY_S = 10.0
AFTER_FAULT_S = 30.0
PROVIDER_FAULTS = FaultMix(server_error=0.2, rate_limited=0.1, late=0.05, late_s=6.0, retry_after_s=1)
FAULTS = ("broker kill -9", "broker restart", "worker kill -9", "store frozen", "partition", "provider")


@dataclass
class FaultRun:
    name: str
    started_s: float  # since the run's start
    ended_s: float


@dataclass
class Sample:
    at_s: float  # since the run's start
    emails_sent: int
    ads_published: int
    rss_mib: dict[str, float]  # by worker slot


@dataclass
class Outcome:
    minutes: float
    email_rate_per_s: float
    ad_rate_per_s: float
    emails_published: int = 0
    ads_published: int = 0
    emails_lost: int = 0
    emails_duplicated: int = 0
    ads_lost: int = 0
    ads_paid_twice: int = 0
    model_calls: int = 0
    dead_letters: int = 0
    p50_latency_s: float | None = None
    p99_latency_s: float | None = None
    drain_s: float | None = None
    faults: list[FaultRun] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    workers_alive_at_end: int = 0
    # cause -> (jobs, p50 s, p99 s, max s) of publish-to-send latency
    latency_by_cause: dict[str, tuple[int, float, float, float]] = field(default_factory=dict)


def ad_job(i: int, run_id: str) -> AdJob:
    return AdJob.model_validate(
        {
            "job_id": f"{run_id}-ad-{i}",
            "user_id": f"u-{i % 11}",
            "product": {"name": f"Lamp {run_id}-{i}", "description": "A dimmable LED desk lamp."},
            "audience": "students who study late",
            "platform": "GOOGLE_SEARCH",
            "variants": 2,
        }
    )


def rss_mib(workers: Workers, slots: dict[str, int]) -> dict[str, float]:
    found: dict[str, float] = {}
    for slot, index in slots.items():
        worker = workers.processes[index]
        if worker.proc is None or worker.proc.poll() is not None:
            continue
        with contextlib.suppress(psutil.Error):
            found[slot] = psutil.Process(worker.pid).memory_info().rss / 2**20
    return found


class Soak:
    def __init__(self, opts: argparse.Namespace, cluster: Cluster, store: Store, work_dir: Path) -> None:
        self.opts = opts
        self.cluster = cluster
        self.store = store
        self.run_id = uuid.uuid4().hex[:8]
        self.topics = TopicNames.with_prefix(f"s{self.run_id}.")
        self.resend = FakeResend().start()
        self.model = FakeOpenAI().start()
        self.env = {
            "KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap,
            "KAFKA_TOPIC_PREFIX": f"s{self.run_id}.",
            "KAFKA_GROUP_ID": f"soak-{self.run_id}",
            "KAFKA_REPLICATION_FACTOR": "3",
            "MONGODB_URL": store.url,
            "MONGODB_DATABASE": f"soak_{self.run_id}",
            "RESEND_API_KEY": "re_soak_key",
            "RESEND_API_URL": self.resend.url,
            "RESEND_TIMEOUT_S": "5",
            "RESEND_RATE_LIMIT_PER_S": "10000",
            "EMAIL_SEND_LEASE_S": "10",
            "OPENAI_API_KEY": "sk-soak-key",
            "OPENAI_BASE_URL": self.model.url,
            "OPENAI_MODEL": self.model.model,
            "OPENAI_TIMEOUT_S": "5",
            "AD_LEASE_S": "30",
            "OUTBOX_DIR": str(work_dir / "outbox"),
            "LOG_LEVEL": "INFO",
            **FAST_EMAIL_RETRIES,
            **FAST_AD_RETRIES,
        }
        self.workers = Workers(self.env, work_dir)
        self.slots = {"1": 0, "2": 1, "3": 2}
        self.started_s = 0.0
        self.published_at: dict[str, float] = {}  # recipient -> wall clock
        self.email_jobs: list[EmailJobModel] = []
        self.ad_jobs: list[AdJob] = []
        self.outcome = Outcome(opts.minutes, opts.email_rate, opts.ad_rate)
        self._broker_turn = 0

    def now_s(self) -> float:
        return time.time() - self.started_s

    async def publish(self, publisher: JobPublisher, until_s: float) -> None:
        tick_s = 0.1
        email_due = ad_due = 0.0
        tick = 0
        while self.now_s() < until_s:
            tick += 1
            email_due += self.opts.email_rate * tick_s
            ad_due += self.opts.ad_rate * tick_s
            sends = []
            while email_due >= 1:
                email_due -= 1
                job = email_jobs(1, f"{self.run_id}-{len(self.email_jobs)}")[0]
                self.email_jobs.append(job)
                self.published_at[str(job.to).lower()] = time.time()
                sends.append(publisher.email(job))
            while ad_due >= 1:
                ad_due -= 1
                ad = ad_job(len(self.ad_jobs), self.run_id)
                self.ad_jobs.append(ad)
                sends.append(publisher.ad(ad))
            await asyncio.gather(*sends)
            self.outcome.emails_published = len(self.email_jobs)
            self.outcome.ads_published = len(self.ad_jobs)
            await asyncio.sleep(max(0.0, self.started_s + tick * tick_s - time.time()))

    async def sample(self) -> None:
        while True:
            self.outcome.samples.append(
                Sample(
                    at_s=round(self.now_s(), 1),
                    emails_sent=self.resend.delivery_count,
                    ads_published=len(self.ad_jobs),
                    rss_mib=rss_mib(self.workers, self.slots),
                )
            )
            await asyncio.sleep(SAMPLE_EVERY_S)

    async def inject(self, name: str) -> None:
        started = self.now_s()
        print(f"[soak] {started:7.1f}s fault: {name}", flush=True)
        if name == "broker kill -9":
            node = await self.cluster.leader_of_most(self.topics.email_jobs.main)
            node.kill()
            await asyncio.sleep(20)
            await node.start()
        elif name == "broker restart":
            node = self.cluster.nodes[self._broker_turn % len(self.cluster.nodes)]
            self._broker_turn += 1
            await node.stop()
            await node.start()
        elif name == "worker kill -9":
            index = self.slots["3"]
            self.workers.processes[index].kill()
            await self.workers.start(1)
            self.slots["3"] = len(self.workers.processes) - 1
        elif name == "store frozen":
            self.store.freeze()
            await asyncio.sleep(30)
            self.store.kill()
            await self.store.start()
        elif name == "partition":
            self.cluster.cut()
            await asyncio.sleep(30)
            self.cluster.heal()
        elif name == "provider":
            self.resend.set_faults(PROVIDER_FAULTS, seed=len(self.outcome.faults))
            await asyncio.sleep(60)
            self.resend.set_faults(None)
        self.outcome.faults.append(FaultRun(name, round(started, 1), round(self.now_s(), 1)))
        with contextlib.suppress(Exception):
            await self.cluster.wait_healthy(timeout_s=120)

    async def faults(self, until_s: float) -> None:
        turn = 0
        while True:
            due_s = (turn + 1) * self.opts.fault_every_s
            if due_s >= until_s:
                return
            await asyncio.sleep(max(0.0, due_s - self.now_s()))
            await self.inject(FAULTS[turn % len(FAULTS)])
            turn += 1

    async def run(self) -> Outcome:
        await self.workers.start(3)
        duration_s = self.opts.minutes * 60
        async with JobPublisher(self.cluster.bootstrap, self.topics) as publisher:
            self.started_s = time.time()
            sampler = asyncio.create_task(self.sample())
            faults = asyncio.create_task(self.faults(duration_s))
            await self.publish(publisher, duration_s)
            await faults
            print(f"[soak] {self.now_s():7.1f}s publishing stopped; draining", flush=True)
            drained = await self.drain(timeout_s=self.opts.drain_timeout_s)
            self.outcome.drain_s = drained
            sampler.cancel()
        self.count()
        return self.outcome

    def _sent(self) -> Counter[str]:
        return Counter(d.content_key for d in self.resend.deliveries)

    async def drain(self, timeout_s: float) -> float | None:
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if len(self._sent()) >= len(self.email_jobs):
                results = await ad_results(self.cluster.bootstrap, self.topics.ad_results)
                if len(results) >= len(self.ad_jobs):
                    return round(time.monotonic() - start, 1)
            await asyncio.sleep(2)
        return None

    def count(self) -> None:
        o = self.outcome
        deliveries = self.resend.deliveries
        sent = self._sent()
        o.emails_duplicated = sum(n - 1 for n in sent.values() if n > 1)
        recipients = Counter[str]()
        first_at: dict[str, float] = {}
        for d in deliveries:
            for to in d.body.get("to") or []:
                address = str(to).lower()
                recipients[address] += 1
                first_at[address] = min(first_at.get(address, d.arrived_s or d.at_s), d.arrived_s or d.at_s)
        o.emails_lost = sum(1 for job in self.email_jobs if str(job.to).lower() not in first_at)
        latencies = [first_at[r] - published for r, published in self.published_at.items() if r in first_at]
        if latencies:
            latencies.sort()
            o.p50_latency_s = round(statistics.median(latencies), 2)
            o.p99_latency_s = round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2)
        o.workers_alive_at_end = len(self.workers.alive())
        # Latency by what was going on when the job was published: a fault (from its start
        # to 30 s after its end) or none.
        by_cause: dict[str, list[float]] = {}
        for recipient, published in self.published_at.items():
            if recipient not in first_at:
                continue
            at_s = published - self.started_s
            cause = next(
                (f.name for f in o.faults if f.started_s <= at_s <= f.ended_s + AFTER_FAULT_S), "no fault"
            )
            by_cause.setdefault(cause, []).append(first_at[recipient] - published)
        for cause, values in by_cause.items():
            values.sort()
            o.latency_by_cause[cause] = (
                len(values),
                round(statistics.median(values), 2),
                round(values[min(len(values) - 1, int(len(values) * 0.99))], 2),
                round(values[-1], 2),
            )

    async def count_ads(self) -> None:
        results = await ad_results(self.cluster.bootstrap, self.topics.ad_results)
        self.outcome.ads_lost = sum(1 for job in self.ad_jobs if job.job_id not in results)
        calls = model_calls_by_job(self.model, self.ad_jobs)
        self.outcome.ads_paid_twice = sum(1 for n in calls.values() if n > 1)
        self.outcome.model_calls = sum(calls.values())

    def close(self) -> None:
        self.workers.stop_all()
        self.resend.stop()
        self.model.stop()


def per_minute(samples: list[Sample]) -> list[tuple[int, float]]:
    """Emails sent per second in each minute, from the samples."""
    rates: list[tuple[int, float]] = []
    by_minute: dict[int, list[Sample]] = {}
    for s in samples:
        by_minute.setdefault(int(s.at_s // 60), []).append(s)
    previous: Sample | None = None
    for minute in sorted(by_minute):
        last = by_minute[minute][-1]
        if previous is not None and last.at_s > previous.at_s:
            rates.append((minute, (last.emails_sent - previous.emails_sent) / (last.at_s - previous.at_s)))
        previous = last
    return rates


def rss_figures(samples: list[Sample]) -> dict[str, tuple[float, float]]:
    """Each long-lived worker's RSS after warm-up (the 2nd minute) and at the end."""
    figures: dict[str, tuple[float, float]] = {}
    for slot in ("1", "2"):
        series = [(s.at_s, s.rss_mib[slot]) for s in samples if slot in s.rss_mib]
        warm = [v for at, v in series if at >= 60]
        if warm:
            figures[slot] = (round(warm[0], 1), round(warm[-1], 1))
    return figures


def report(o: Outcome) -> str:
    lines = [
        f"# Soak: {o.minutes:g} minutes, {o.email_rate_per_s:g} emails/s + {o.ad_rate_per_s:g} ad jobs/s, "
        "a fault every few minutes",
        "",
        f"- published: {o.emails_published} emails, {o.ads_published} ad jobs",
        f"- emails lost: **{o.emails_lost}**, duplicated (by content): **{o.emails_duplicated}**",
        f"- ad jobs without a result: **{o.ads_lost}**, paid twice: **{o.ads_paid_twice}** "
        f"({o.model_calls} model calls)",
        f"- publish-to-send latency p50 / p99: {o.p50_latency_s} / **{o.p99_latency_s} s**",
        f"- drained in {o.drain_s} s after publishing stopped; workers alive at the end: "
        f"{o.workers_alive_at_end}",
        "",
        "| published during | emails | p50 (s) | p99 (s) | max (s) |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {cause} | {n} | {p50} | {p99} | {top} |"
            for cause, (n, p50, p99, top) in sorted(o.latency_by_cause.items())
        ),
        "",
        "| fault | from (s) | to (s) |",
        "|---|---:|---:|",
        *(f"| {f.name} | {f.started_s} | {f.ended_s} |" for f in o.faults),
        "",
        "| minute | emails sent/s | RSS worker 1 (MiB) | RSS worker 2 (MiB) |",
        "|---:|---:|---:|---:|",
    ]
    rss_at: dict[int, Sample] = {int(s.at_s // 60): s for s in o.samples}
    for minute, rate in per_minute(o.samples):
        s = rss_at.get(minute)
        r1 = f"{s.rss_mib.get('1', 0):.0f}" if s else "-"
        r2 = f"{s.rss_mib.get('2', 0):.0f}" if s else "-"
        lines.append(f"| {minute} | {rate:.1f} | {r1} | {r2} |")
    lines.append("")
    for slot, (start, end) in rss_figures(o.samples).items():
        lines.append(f"- worker {slot} RSS: {start} MiB after the first minute, {end} MiB at the end")
    return "\n".join(lines) + "\n"


async def main(opts: argparse.Namespace) -> int:
    # The publisher's own complaints while a broker is down are expected; the figures tell.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    work_dir = Path(tempfile.mkdtemp(prefix="soak-"))
    print(f"[soak] starting the cluster and store in {work_dir}", flush=True)
    cluster, store, loop = start_session(work_dir / "services")
    soak: Soak | None = None
    try:
        await cluster.wait_healthy()
        soak = Soak(opts, cluster, store, work_dir)
        outcome = await soak.run()
        await soak.count_ads()
    finally:
        if soak is not None:
            soak.close()
        stop_session(cluster, loop)
    text = report(outcome)
    print(text)
    if not opts.smoke:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{opts.out}.md").write_text(text)
        (RESULTS / f"{opts.out}.json").write_text(json.dumps(asdict(outcome), indent=1) + "\n")
    bad = outcome.emails_lost + outcome.emails_duplicated + outcome.ads_lost + outcome.ads_paid_twice
    return 1 if bad else 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--fault-every-s", type=float, default=120.0)
    parser.add_argument("--email-rate", type=float, default=20.0, help="email jobs published per second")
    parser.add_argument("--ad-rate", type=float, default=0.5, help="ad jobs published per second")
    parser.add_argument("--drain-timeout-s", type=float, default=300.0)
    parser.add_argument("--out", default="soak", help="results go to benchmarks/results/<out>.{md,json}")
    parser.add_argument("--smoke", action="store_true", help="2 minutes, a fault every 50 s; writes nothing")
    opts = parser.parse_args(argv)
    if opts.smoke:
        opts.minutes, opts.fault_every_s = 2.0, 50.0
    return opts


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
