"""A network partition between the workers and the whole cluster for 30 s, during 1,000 jobs.

Every byte between a worker and a broker goes through a proxy (the brokers advertise the
proxies' addresses), and the cut blackholes them all: open connections dropped, new ones
accepted and never answered, as behind a dead link. The jobs' producer stands outside
the partition (on the brokers' own listeners), so jobs keep arriving on the cluster while
the workers cannot see them: no email may go out during the cut, and after the heal each
goes out exactly once.
"""

from __future__ import annotations

import asyncio
import time

from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.chaos.cluster import Cluster
from tests.chaos.faults import (
    FAST_EMAIL_RETRIES,
    outside_the_partition,
)
from tests.chaos.scenario import Report, Workers, assert_ending, email_jobs, publish_paced, wait_for_sends
from tests.fakes.resend_server import Delivery, FakeResend

JOBS = 1_000
CUT_S = 30.0
DRAIN_S = 5.0
"""Jobs a worker fetched before the cut may still go out (the store and the provider are
reachable) for this long after it; then the workers must fall silent."""


def job_index(delivery: Delivery) -> int:
    """The job a delivery belongs to, from its recipient (`u<index>.<run_id>@example.com`)."""
    [recipient] = delivery.body["to"] if isinstance(delivery.body["to"], list) else [delivery.body["to"]]
    return int(recipient.split(".", 1)[0].removeprefix("u"))


async def test_a_30_s_partition_sends_nothing_meanwhile_and_everything_once_after(
    chaos_cluster: Cluster,
    chaos_resend: FakeResend,
    chaos_env: dict[str, str],
    workers: Workers,
    chaos_topics: TopicNames,
    chaos_report: Report,
    chaos_run_id: str,
) -> None:
    # Given two workers, and jobs published from outside the partition over 45 s
    await workers.start(n=2, **FAST_EMAIL_RETRIES)
    jobs = email_jobs(JOBS, chaos_run_id)
    async with JobPublisher(outside_the_partition(chaos_cluster)) as publisher:
        paced = publish_paced(publisher, jobs, over_s=45, topic=chaos_topics.email_jobs.main)

        # When, after 150 sends, every worker-broker link is cut for 30 s
        await wait_for_sends(chaos_resend, 150, timeout_s=120)
        published_before_cut = paced.published
        cut_s = time.time()
        chaos_cluster.cut()
        await asyncio.sleep(CUT_S)  # the fault's length, not a wait for a condition
        healed_s = time.time()
        chaos_cluster.heal()
        published_by_heal = paced.published
        await paced.wait(timeout_s=120)

    # Then during the cut only jobs published before it went out, and none at all once the
    # work already fetched had drained
    sent_in_cut = [d for d in chaos_resend.deliveries if cut_s <= d.at_s < healed_s]
    draining = [d for d in sent_in_cut if d.at_s < cut_s + DRAIN_S]
    late = [d for d in sent_in_cut if d.at_s >= cut_s + DRAIN_S]
    newest_sent_in_cut = max((job_index(d) for d in sent_in_cut), default=-1)
    print(
        f"\n[chaos] partition {healed_s - cut_s:.1f}s: {len(draining)} sends in its first {DRAIN_S:g}s "
        f"(jobs fetched before it), {len(late)} after; jobs published before the cut "
        f"{published_before_cut}, by the heal {published_by_heal}; newest job sent in the cut "
        f"#{newest_sent_in_cut}"
    )
    # And every email goes out exactly once after the heal, nothing dead-lettered
    figures = await assert_ending(
        report=chaos_report,
        fault="partition workers | cluster, 30 s (blackhole)",
        resend=chaos_resend,
        jobs=jobs,
        cluster=chaos_cluster,
        topics=chaos_topics,
        group_id=chaos_env["KAFKA_GROUP_ID"],
        workers=workers.processes,
        fault_started_s=cut_s,
        fault_ended_s=healed_s,
        timeout_s=180,
    )
    first_after_s = min((d.at_s for d in chaos_resend.deliveries if d.at_s >= healed_s), default=None)
    figures.notes.update(
        sends_draining_after_cut=len(draining),
        sends_later_in_cut=len(late),
        jobs_published_in_cut=published_by_heal - published_before_cut,
        first_send_after_heal_s=None if first_after_s is None else round(first_after_s - healed_s, 1),
    )
    chaos_report.record(figures)
    assert late == [], f"{len(late)} emails sent while the workers were cut off from the cluster"
    # (a tick's jobs may be acknowledged a moment after `published` was read)
    assert newest_sent_in_cut < published_before_cut + 10, "a job published during the cut went out in it"
    assert published_by_heal - published_before_cut > 100, "jobs kept arriving on the cluster meanwhile"
