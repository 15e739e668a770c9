"""Brokers failing under 3,000 email jobs and 3 worker processes: every job sent exactly once.

The topics have replication factor 3 and min.insync.replicas 2, the producers acks=all
with idempotence: one broker of three may die at any moment without losing an
acknowledged job, and the workers carry on with the other two.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from streams.admin import MIN_INSYNC_REPLICAS, describe_topic_configs
from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.chaos.cluster import Cluster
from tests.chaos.scenario import (
    Report,
    Workers,
    assert_ending,
    email_jobs,
    publish_paced,
    sent_contents,
    wait_for_sends,
)
from tests.fakes.resend_server import FakeResend

pytestmark = pytest.mark.chaos

JOBS = 3_000
WORKERS = 3
KILLED_FOR_S = 20.0
STEP_PUBLISH_S = 15.0  # a rolling restart's jobs for one node are published over this long


async def test_kill_9_of_the_broker_leading_most_job_partitions_loses_and_doubles_nothing(
    chaos_cluster: Cluster,
    chaos_topics: TopicNames,
    chaos_resend: FakeResend,
    chaos_publisher: JobPublisher,
    chaos_env: dict[str, str],
    chaos_report: Report,
    workers: Workers,
    chaos_run_id: str,
) -> None:
    jobs = email_jobs(JOBS, chaos_run_id)
    started_s = time.monotonic()
    await workers.start(WORKERS)
    chaos_report.note(workers_ready_s=round(time.monotonic() - started_s, 1))
    # Paced so that jobs still arrive during the outage and after the restart.
    paced = publish_paced(chaos_publisher, jobs, over_s=KILLED_FOR_S + 10)
    await wait_for_sends(chaos_resend, JOBS // 6, timeout_s=120)

    topic = chaos_topics.email_jobs.main
    (described,) = await chaos_cluster.describe([topic])
    assert {len(p["replicas"]) for p in described["partitions"]} == {3}
    configs = await describe_topic_configs(chaos_cluster.bootstrap, [topic], [MIN_INSYNC_REPLICAS])
    assert configs[topic][MIN_INSYNC_REPLICAS] == "2", "the worker creates its topics with min ISR 2"
    leaders_before = await chaos_cluster.leader_counts(topic)
    victim = await chaos_cluster.leader_of_most(topic)
    sent_at_kill = len(sent_contents(chaos_resend))
    fault_started_s = time.time()
    victim.kill()
    print(
        f"\nkill -9 of broker {victim.node_id} (leaders of {topic}: {leaders_before}) at {sent_at_kill} sent"
    )

    await asyncio.sleep(KILLED_FOR_S)  # the fault itself: the broker stays down this long
    sent_while_down = len(sent_contents(chaos_resend)) - sent_at_kill
    fault_ended_s = time.time()  # the restart is issued: rejoining is part of the recovery
    await victim.start()
    chaos_report.note(
        sent_at_kill=sent_at_kill,
        sent_while_down=sent_while_down,
        rejoined_after_s=round(time.time() - fault_ended_s, 1),
    )

    await paced.wait(timeout_s=180)
    figures = await assert_ending(
        report=chaos_report,
        fault=f"kill -9 of the leader of most {topic} partitions, restarted {KILLED_FOR_S:g} s later",
        resend=chaos_resend,
        jobs=jobs,
        cluster=chaos_cluster,
        topics=chaos_topics,
        group_id=chaos_env["KAFKA_GROUP_ID"],
        workers=workers.processes,
        fault_started_s=fault_started_s,
        fault_ended_s=fault_ended_s,
    )
    assert sent_at_kill < JOBS, "the kill must land in the middle of the work"
    assert sent_while_down > 0, "two brokers of three (min.insync.replicas=2) keep the jobs flowing"
    chaos_report.note(healthy_again_s=round(await chaos_cluster.wait_healthy(), 1))
    print(figures.line())


async def test_a_rolling_restart_of_all_three_brokers_loses_and_doubles_nothing(
    chaos_cluster: Cluster,
    chaos_topics: TopicNames,
    chaos_resend: FakeResend,
    chaos_publisher: JobPublisher,
    chaos_env: dict[str, str],
    chaos_report: Report,
    workers: Workers,
    chaos_run_id: str,
) -> None:
    jobs = email_jobs(JOBS, chaos_run_id)
    started_s = time.monotonic()
    await workers.start(WORKERS)
    chaos_report.note(workers_ready_s=round(time.monotonic() - started_s, 1))
    # A quarter of the jobs before the restarts, and a quarter during each node's restart,
    # published at a steady pace however long a restart takes on this machine.
    portions = [jobs[i * len(jobs) // 4 : (i + 1) * len(jobs) // 4] for i in range(4)]
    await publish_paced(chaos_publisher, portions[0], over_s=STEP_PUBLISH_S / 2).wait(timeout_s=120)
    await wait_for_sends(chaos_resend, len(portions[0]) // 2, timeout_s=120)

    sent_at_start = len(sent_contents(chaos_resend))
    fault_started_s = time.time()
    steps: list[str] = []
    for node, portion in zip(chaos_cluster.nodes, portions[1:], strict=True):
        # One at a time, as an operator upgrades a cluster: the next only once every
        # partition has its full ISR again.
        step_s = time.monotonic()
        sent_before = len(sent_contents(chaos_resend))
        paced = publish_paced(chaos_publisher, portion, over_s=STEP_PUBLISH_S)
        await node.stop()
        stopped_s = time.monotonic() - step_s
        await node.start()
        await chaos_cluster.wait_healthy()
        await paced.wait(timeout_s=180)
        sent = len(sent_contents(chaos_resend)) - sent_before
        steps.append(
            f"{node.name}: stopped in {stopped_s:.1f}s, healthy after {time.monotonic() - step_s:.1f}s, "
            f"{sent} sent"
        )
    fault_ended_s = time.time()
    sent_during = len(sent_contents(chaos_resend)) - sent_at_start
    print(f"\nrolling restart: {'; '.join(steps)}")
    chaos_report.note(sent_at_start=sent_at_start, sent_during=sent_during, steps=steps)

    await assert_ending(
        report=chaos_report,
        fault="rolling restart of the three brokers (SIGTERM, start, wait for full ISR), one at a time",
        resend=chaos_resend,
        jobs=jobs,
        cluster=chaos_cluster,
        topics=chaos_topics,
        group_id=chaos_env["KAFKA_GROUP_ID"],
        workers=workers.processes,
        fault_started_s=fault_started_s,
        fault_ended_s=fault_ended_s,
    )
    assert sent_at_start < JOBS, "the restarts must start in the middle of the work"
    assert sent_during > 0, "jobs keep flowing while one broker of three restarts"
