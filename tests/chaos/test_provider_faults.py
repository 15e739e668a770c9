"""A provider that fails a third of the time, during 2,000 jobs: every email still sent once.

Of the requests reaching the fake Resend, 20 % are answered 5xx, 10 % 429 with
`retry-after: 1`, and 5 % are accepted at once but answered only after
`RESEND_TIMEOUT_S`: the worker times out on an email that went out, and only the
`Idempotency-Key` keeps its retry from sending it again (while the first request is still
held, Resend answers the retry 409 `concurrent_idempotent_requests`; afterwards it
replays the first answer). Each request's fault is drawn from its key, the how-manieth
request with that key it is, and a fixed seed, so a failing run meets the same faults.
"""

from __future__ import annotations

import time
from collections import Counter

from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.chaos.cluster import Cluster
from tests.chaos.faults import FAST_EMAIL_RETRIES
from tests.chaos.scenario import Report, Workers, assert_ending, email_jobs, publish_paced
from tests.fakes.resend_server import BATCH_PATH, FakeResend, FaultMix

JOBS = 2_000
SEED = 14
TIMEOUT_S = 1.5
FAULTS = FaultMix(server_error=0.20, rate_limited=0.10, late=0.05, late_s=TIMEOUT_S + 1.0, retry_after_s=1)


async def test_5xx_429_and_late_answers_send_every_email_exactly_once(
    chaos_cluster: Cluster,
    chaos_resend: FakeResend,
    chaos_env: dict[str, str],
    workers: Workers,
    chaos_publisher: JobPublisher,
    chaos_topics: TopicNames,
    chaos_report: Report,
    chaos_run_id: str,
) -> None:
    # Given a provider failing 35 % of its requests, and two workers with quick retries
    chaos_resend.set_faults(FAULTS, seed=SEED)
    await workers.start(
        n=2,
        RESEND_TIMEOUT_S=str(TIMEOUT_S),
        EMAIL_SEND_LEASE_S="5",
        # Every 5xx or late answer costs an attempt (a 429 does not): 12 make running out
        # as good as impossible at 25 % (0.25^12 per job); the default 8 would lose ~1 in 30,000.
        EMAIL_RETRY_MAX_ATTEMPTS="12",
        **FAST_EMAIL_RETRIES,
    )
    jobs = email_jobs(JOBS, chaos_run_id)

    # When 2,000 jobs are published over 10 s
    started_s = time.time()
    paced = publish_paced(chaos_publisher, jobs, over_s=10, topic=chaos_topics.email_jobs.main)
    await paced.wait(timeout_s=120)

    # Then each email is sent exactly once, nothing is dead-lettered, the workers live on
    figures = await assert_ending(
        report=chaos_report,
        fault="provider: 20% 5xx, 10% 429, 5% answered after RESEND_TIMEOUT_S",
        resend=chaos_resend,
        jobs=jobs,
        cluster=chaos_cluster,
        topics=chaos_topics,
        group_id=chaos_env["KAFKA_GROUP_ID"],
        workers=workers.processes,
        fault_started_s=started_s,
        fault_ended_s=paced.done_at_s or time.time(),
        timeout_s=240,
    )
    requests = chaos_resend.requests
    faults = chaos_resend.count_by_fault()
    statuses = chaos_resend.count_by_status()
    answered_ok: Counter[str | None] = Counter(r.idempotency_key for r in requests if r.status == 200)
    figures.notes.update(
        requests=len(requests),
        batch_calls=sum(r.path == BATCH_PATH for r in requests),
        faults=faults,
        statuses=statuses,
        # A key answered 200 more than once: all but its first answer were replays.
        replays=sum(count - 1 for count in answered_ok.values()),
    )
    chaos_report.record(figures)
    # The faults really happened, in about the shares asked for (of requests, not jobs:
    # a batch call carries many jobs)
    assert faults.get("5xx", 0) >= 0.12 * len(requests), faults
    assert faults.get("429", 0) >= 0.06 * len(requests), faults
    assert faults.get("late", 0) >= 0.02 * len(requests), faults
