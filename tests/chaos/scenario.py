"""What every chaos test does: publish jobs at a steady pace, run a fault, and check the ending.

The ending is the same for every fault: each job's email sent exactly once, counted at
the fake Resend by content (recipients, subject, text, html: so a duplicate sent under
another idempotency key, or inside a batch, still counts); nothing in any dead-letter
topic unless the test put it there; every worker process still alive. The figures
(jobs, duplicates, lost, time to recover) are recorded in a `Report`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from processors.email.jobs import EmailJobModel
from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.chaos.cluster import Cluster
from tests.fakes.resend_server import FakeResend
from tests.integration.jobs import mixed_job
from tests.integration.kafka_tools import group_lag, records_in
from tests.integration.worker import WorkerProcess
from tests.polling import eventually

PUBLISH_TICK_S = 0.1


def email_jobs(count: int, run_id: str) -> list[EmailJobModel]:
    """`count` email jobs of mixed types whose emails all differ in content (code, name or
    link), each to a recipient of its own: a `SEND_OTP` redelivered after a newer code to
    the same recipient was sent is dropped as superseded, by design, which an
    exactly-once count would call lost."""
    jobs: list[EmailJobModel] = []
    for i in range(count):
        job = mixed_job(i, run_id)
        jobs.append(job.model_copy(update={"to": f"u{i}.{run_id}@example.com"}))
    return jobs


class Paced:
    """A background publication; `published` counts the jobs the cluster acknowledged."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.published = 0
        self.done_at_s: float | None = None  # wall clock (time.time())

    async def wait(self, timeout_s: float) -> None:
        """Until every job is published (re-raises the publication's error)."""
        assert self.task is not None
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(self.task)


def publish_paced(
    publisher: JobPublisher, jobs: Sequence[EmailJobModel], *, over_s: float, topic: str | None = None
) -> Paced:
    """Publish `jobs` at a steady rate over about `over_s` seconds, in a background task.

    Each tick's jobs are published concurrently and acknowledged (acks=all) before the
    next tick: a publication stalled by a fault resumes where it was, it does not burst.
    """
    per_tick = max(1, round(len(jobs) * PUBLISH_TICK_S / over_s))
    paced = Paced()

    async def run() -> None:
        start_s = time.monotonic()
        for tick, first in enumerate(range(0, len(jobs), per_tick)):
            chunk = jobs[first : first + per_tick]
            await asyncio.gather(*(publisher.email(job, topic=topic) for job in chunk))
            paced.published += len(chunk)
            due_s = start_s + (tick + 1) * PUBLISH_TICK_S
            await asyncio.sleep(max(0.0, due_s - time.monotonic()))
        paced.done_at_s = time.time()

    paced.task = asyncio.create_task(run(), name="publish-paced")
    return paced


class Workers:
    """Real worker processes (`faststream run streams.app:app`) on the chaos cluster."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: list[WorkerProcess] = []

    async def start(self, n: int = 1, **overrides: str) -> list[WorkerProcess]:
        """Start `n` more side by side; returns once each logged that it is ready."""
        new = [
            WorkerProcess({**self.env, **overrides}, self.log_dir / f"worker-{len(self.processes) + i}.log")
            for i in range(n)
        ]
        self.processes.extend(new)
        await asyncio.gather(*(asyncio.to_thread(worker.start, ready_timeout_s=120) for worker in new))
        return new

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.processes if w.proc is not None and w.proc.poll() is None]

    def stop_all(self) -> None:
        for worker in self.processes:  # TERM them all first: they drain side by side
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.terminate()
        for worker in self.processes:
            worker.stop(timeout_s=30)


def sent_contents(resend: FakeResend) -> Counter[str]:
    """How many times each distinct email (by content) reached the provider."""
    return Counter(delivery.content_key for delivery in resend.deliveries)


async def wait_for_sends(resend: FakeResend, count: int, *, timeout_s: float, what: str = "") -> None:
    """Until `count` distinct emails (by content) were sent."""
    await eventually(
        lambda: len(sent_contents(resend)) >= count,
        timeout_s=timeout_s,
        interval_s=0.1,
        what=what or f"{count} distinct emails sent",
    )


@dataclass
class Figures:
    test: str
    fault: str
    jobs: int
    sent: int = 0
    duplicates: int = 0
    lost: int = 0
    dead_letters: int = 0
    recovery_s: float | None = None
    """From the fault's end to the last job's send; 0 when every job was sent before it ended."""
    longest_send_gap_s: float | None = None
    """The longest time without any send while jobs were waiting: the fault's visible stall."""
    wall_s: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        def s(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}s"

        notes = "".join(f", {key}={value}" for key, value in self.notes.items())
        return (
            f"{self.test}: fault={self.fault!r} jobs={self.jobs} sent={self.sent} "
            f"duplicates={self.duplicates} lost={self.lost} dead_letters={self.dead_letters} "
            f"recovery={s(self.recovery_s)} longest_gap={s(self.longest_send_gap_s)} "
            f"wall={s(self.wall_s)}{notes}"
        )


class Report:
    """One test's figures; printed at the test's end, and kept for the session's summary."""

    def __init__(self, test: str, session: list[Figures]) -> None:
        self.test = test
        self._session = session
        self.started_s = time.monotonic()
        self.figures: Figures | None = None

    def record(self, figures: Figures) -> Figures:
        figures.wall_s = time.monotonic() - self.started_s
        self.figures = figures
        return figures

    def note(self, **notes: Any) -> None:
        """Extra figures for the summary (e.g. `kill_at_sent=1000`); kept even if the test fails."""
        self._pending_notes = {**getattr(self, "_pending_notes", {}), **notes}

    def finish(self) -> None:
        figures = self.figures
        if figures is None:
            return
        figures.wall_s = figures.wall_s or time.monotonic() - self.started_s
        figures.notes = {**getattr(self, "_pending_notes", {}), **figures.notes}
        self._session.append(figures)
        print(f"\n[chaos] {figures.line()}")
        path = os.environ.get("CHAOS_REPORT_FILE")
        if path:
            with Path(path).open("a") as file:
                file.write(json.dumps(asdict(figures)) + "\n")


def longest_gap_s(times_s: Sequence[float], start_s: float, end_s: float) -> float:
    """The longest stretch inside [start_s, end_s] with none of `times_s`."""
    inside = sorted(t for t in times_s if start_s <= t <= end_s)
    marks = [start_s, *inside, end_s]
    return max(b - a for a, b in itertools.pairwise(marks))


async def assert_ending(
    *,
    report: Report,
    fault: str,
    resend: FakeResend,
    jobs: Sequence[EmailJobModel],
    cluster: Cluster,
    topics: TopicNames,
    group_id: str,
    workers: Sequence[WorkerProcess],
    fault_started_s: float,
    fault_ended_s: float,
    timeout_s: float = 180.0,
    allowed_dead_letters: int = 0,
) -> Figures:
    """Wait until every job was sent and consumed, then check the ending and record the figures.

    `fault_started_s` and `fault_ended_s` are wall-clock times (`time.time()`). The
    group's committed offsets are awaited too (lag 0 on the jobs' topics): after that no
    worker will send a job again, so a duplicate would already be counted.
    """
    figures = Figures(test=report.test, fault=fault, jobs=len(jobs))
    report.record(figures)
    try:
        await wait_for_sends(resend, len(jobs), timeout_s=timeout_s, what=f"all {len(jobs)} jobs sent")
    finally:
        _count(figures, resend, len(jobs), fault_started_s, fault_ended_s)

    async def consumed() -> bool:
        lags = [
            await group_lag(cluster.bootstrap, group, topic)
            for group, topic in (
                (group_id, topics.email_jobs.main),
                (f"{group_id}.bulk", topics.email_bulk.main),
            )
        ]
        return sum(lags) == 0

    await eventually(consumed, timeout_s=60, interval_s=0.5, what="every job's offset committed")
    _count(figures, resend, len(jobs), fault_started_s, fault_ended_s)
    dead = [
        record for topic in topics.dead_letter_topics for record in await records_in(cluster.bootstrap, topic)
    ]
    figures.dead_letters = len(dead)
    report.record(figures)

    assert figures.duplicates == 0, f"{figures.duplicates} emails sent more than once"
    assert figures.lost == 0, f"{figures.lost} jobs never sent"
    assert figures.dead_letters == allowed_dead_letters, [d.record for d in dead][:5]
    dead_workers = [w.pid for w in workers if w.proc is None or w.proc.poll() is not None]
    assert not dead_workers, f"worker processes exited: {dead_workers}"
    return figures


def _count(
    figures: Figures, resend: FakeResend, jobs: int, fault_started_s: float, fault_ended_s: float
) -> None:
    deliveries = resend.deliveries
    contents = Counter(d.content_key for d in deliveries)
    figures.sent = len(contents)
    figures.duplicates = sum(count - 1 for count in contents.values())
    figures.lost = max(0, jobs - len(contents))
    if deliveries:
        times_s = [d.at_s for d in deliveries]
        last_s = max(times_s)
        figures.recovery_s = max(0.0, last_s - fault_ended_s)
        figures.longest_send_gap_s = longest_gap_s(times_s, fault_started_s, max(last_s, fault_started_s))
