"""`kill -9` of one of three worker processes during 3,000 jobs, then a fourth one added.

The killed process had jobs claimed and in flight, offsets not yet committed; the group
rebalances twice with jobs in flight (the dead member's session expiring, the new member
joining). Its claims hold for `EMAIL_SEND_LEASE_S`, then the new owners take its jobs over:
the ledger and the `Idempotency-Key` keep every email to one send.
"""

from __future__ import annotations

import time

from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.chaos.cluster import Cluster
from tests.chaos.faults import FAST_EMAIL_RETRIES
from tests.chaos.scenario import Report, Workers, assert_ending, email_jobs, publish_paced, wait_for_sends
from tests.fakes.resend_server import FakeResend

JOBS = 3_000
PROVIDER_LATENCY_S = 0.05  # so that a process always has sends in flight when it is killed


async def test_a_worker_killed_and_another_added_mid_run_sends_every_email_once(
    chaos_cluster: Cluster,
    chaos_resend: FakeResend,
    chaos_env: dict[str, str],
    workers: Workers,
    chaos_publisher: JobPublisher,
    chaos_topics: TopicNames,
    chaos_report: Report,
    chaos_run_id: str,
) -> None:
    # Given three workers sharing the jobs
    chaos_resend.state.latency_s = PROVIDER_LATENCY_S
    env = {"EMAIL_SEND_LEASE_S": "8", **FAST_EMAIL_RETRIES}
    first = await workers.start(n=3, **env)
    jobs = email_jobs(JOBS, chaos_run_id)

    # When a third of the 3,000 jobs went out, one of them is killed (kill -9), and a new
    # one is started at once
    paced = publish_paced(chaos_publisher, jobs, over_s=20, topic=chaos_topics.email_jobs.main)
    await wait_for_sends(chaos_resend, JOBS // 3, timeout_s=120)
    victim = first[0]
    killed_s = time.time()
    victim.kill()
    sent_at_kill = len(chaos_resend.deliveries)
    print(f"\n[chaos] kill -9 of worker pid {victim.pid} after {sent_at_kill} of {JOBS} sends")
    [newcomer] = await workers.start(n=1, **env)
    joined_s = time.time()
    await paced.wait(timeout_s=120)

    # Then every email is sent exactly once, nothing dead-lettered, the other three alive
    figures = await assert_ending(
        report=chaos_report,
        fault="kill -9 of 1 of 3 workers, then a 4th added",
        resend=chaos_resend,
        jobs=jobs,
        cluster=chaos_cluster,
        topics=chaos_topics,
        group_id=chaos_env["KAFKA_GROUP_ID"],
        workers=[*first[1:], newcomer],
        fault_started_s=killed_s,
        fault_ended_s=joined_s,
        timeout_s=180,
    )
    figures.notes.update(sent_at_kill=sent_at_kill, newcomer_ready_after_s=round(joined_s - killed_s, 1))
    chaos_report.record(figures)
    assert victim.proc is not None
    assert victim.proc.returncode == -9
    assert "worker ready" in newcomer.log_since_start()
