"""The store frozen (SIGSTOP) for 30 s, then killed (SIGKILL) and started again, during
email and ad jobs.

A frozen FerretDB accepts connections and answers nothing, the worst kind of outage for a
client: every claim, mark and read hangs until its own timeout. Then the process dies
with whatever it had not written, and comes back. The email path must still send each
email once; the ad path must publish one succeeded result per job and call the model
once per job. (The ad assertions stay with what a user sees, `ad-results` and the model's
bill: the ad path's internals are changing.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from processors.ads.jobs import AdJob
from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.chaos.cluster import Cluster, Store
from tests.chaos.faults import (
    FAST_EMAIL_RETRIES,
    ad_jobs,
    ad_results,
    model_calls_by_job,
    model_env,
    sends_between,
)
from tests.chaos.scenario import Report, Workers, assert_ending, email_jobs, publish_paced, wait_for_sends
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.resend_server import FakeResend
from tests.polling import eventually

EMAIL_JOBS = 1_000
AD_JOBS = 60
FREEZE_S = 30.0
PUBLISH_OVER_S = 40.0


async def publish_ads_paced(
    publisher: JobPublisher, jobs: Sequence[AdJob], *, topic: str, over_s: float
) -> None:
    """One ad job at a time, evenly over `over_s` (a stalled publish delays the rest)."""
    start_s = time.monotonic()
    for i, job in enumerate(jobs):
        await publisher.ad(job, topic=topic)
        await asyncio.sleep(max(0.0, start_s + (i + 1) * over_s / len(jobs) - time.monotonic()))


async def test_a_frozen_then_killed_store_loses_no_email_and_no_ad(
    chaos_cluster: Cluster,
    chaos_store: Store,
    chaos_resend: FakeResend,
    fake_openai: FakeOpenAI,
    chaos_env: dict[str, str],
    workers: Workers,
    chaos_publisher: JobPublisher,
    chaos_topics: TopicNames,
    chaos_report: Report,
    chaos_run_id: str,
) -> None:
    # Given two workers doing email and ad jobs
    await workers.start(n=2, **model_env(fake_openai), **FAST_EMAIL_RETRIES)
    emails = email_jobs(EMAIL_JOBS, chaos_run_id)
    ads = ad_jobs(AD_JOBS, chaos_run_id)
    paced = publish_paced(chaos_publisher, emails, over_s=PUBLISH_OVER_S, topic=chaos_topics.email_jobs.main)
    ads_published = asyncio.create_task(
        publish_ads_paced(chaos_publisher, ads, topic=chaos_topics.ad_jobs.main, over_s=PUBLISH_OVER_S)
    )

    # When, once a fifth of the emails went out, the store is frozen for 30 s, then killed
    # and started again
    await wait_for_sends(chaos_resend, EMAIL_JOBS // 5, timeout_s=120)
    frozen_s = time.time()
    chaos_store.freeze()
    await asyncio.sleep(FREEZE_S)  # the fault's length, not a wait for a condition
    chaos_store.kill()
    killed_s = time.time()
    await chaos_store.start()
    restarted_s = time.time()
    sent_while_frozen = sends_between(chaos_resend, frozen_s + 1.0, killed_s)
    print(
        f"\n[chaos] store frozen {killed_s - frozen_s:.1f}s, killed, back after "
        f"{restarted_s - killed_s:.1f}s; {sent_while_frozen} sends while frozen (after the first second)"
    )
    await paced.wait(timeout_s=120)
    await asyncio.wait_for(ads_published, timeout=120)

    # Then each email is sent exactly once, nothing dead-lettered, the workers alive
    figures = await assert_ending(
        report=chaos_report,
        fault="store SIGSTOP 30 s, then SIGKILL + restart (email + ad jobs)",
        resend=chaos_resend,
        jobs=emails,
        cluster=chaos_cluster,
        topics=chaos_topics,
        group_id=chaos_env["KAFKA_GROUP_ID"],
        workers=workers.processes,
        fault_started_s=frozen_s,
        fault_ended_s=restarted_s,
        timeout_s=240,
    )

    # And each ad job has exactly one result, succeeded, for one model call
    results: dict[str, list[str]] = {}

    async def every_ad_has_a_result() -> bool:
        results.update(await ad_results(chaos_cluster.bootstrap, chaos_topics.ad_results))
        return all(job.job_id in results for job in ads)

    await eventually(every_ad_has_a_result, timeout_s=120, interval_s=1, what="a result for every ad")
    calls = model_calls_by_job(fake_openai, ads)
    extra_results = {job_id: statuses for job_id, statuses in results.items() if statuses != ["succeeded"]}
    extra_calls = {job_id: n for job_id, n in calls.items() if n != 1}
    figures.notes.update(
        sent_while_frozen=sent_while_frozen,
        store_back_after_s=round(restarted_s - killed_s, 1),
        ad_jobs=AD_JOBS,
        ads_not_one_success=len(extra_results),
        ads_not_one_model_call=len(extra_calls),
    )
    chaos_report.record(figures)
    assert extra_results == {}, f"ad jobs without exactly one succeeded result: {extra_results}"
    assert extra_calls == {}, f"ad jobs whose model was not called exactly once: {extra_calls}"
    assert sent_while_frozen == 0, "no email can be claimed while the store is frozen"
