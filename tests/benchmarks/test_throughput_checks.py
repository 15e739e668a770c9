"""The benchmark's own checks catch what they claim to: duplicates, losses, order; the watermark."""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmarks.throughput import (
    FULL,
    Config,
    Job,
    Outcome,
    Scenario,
    Watermark,
    analyse,
    flow_count,
    make_job,
    parse_config,
    relate,
)
from tests.fakes.resend_server import Delivery, Request

DISTINCT = FULL[0]
ONE_KEY = next(s for s in FULL if s.ordered)


def published(scenario: Scenario, count: int) -> list[Job]:
    jobs = []
    for seq in range(count):
        job, _ = make_job("t", seq, scenario.keys)
        jobs.append(Job(job.seq, job.job_id, job.recipient, partition=0, offset=seq))
    return jobs


def delivered(job: Job, at_s: float, *, key: str | None = None) -> Delivery:
    body = {"to": [job.recipient], "subject": f"Welcome to Acme, Reader n{job.seq:07d}"}
    return Delivery(f"id-{job.seq}-{at_s}", key or job.job_id, body, at_s, arrived_s=at_s - 0.01)


def check(
    scenario: Scenario, jobs: list[Job], deliveries: list[Delivery], *, committed: int, finished: bool
) -> Outcome:
    outcome = Outcome(scenario, "worker", 1, published=len(jobs), finished=finished)
    requests = [Request(d.at_s, d.idempotency_key, None, d.body, 200) for d in deliveries]
    analyse(outcome, jobs, requests, deliveries, {0: committed}, set(), set(), started_s=0.0)
    return outcome


def test_every_job_once_passes_and_gives_the_rate() -> None:
    # Given four jobs sent once each, 0.5 s apart
    jobs = published(DISTINCT, 4)
    deliveries = [delivered(job, 100.0 + i / 2) for i, job in enumerate(jobs)]

    # When they are checked
    outcome = check(DISTINCT, jobs, deliveries, committed=4, finished=True)

    # Then nothing fails, and the rate is 3 intervals over 1.5 s
    assert outcome.errors == []
    assert outcome.rate == 2.0


def test_a_job_sent_twice_under_another_key_is_a_duplicate() -> None:
    # Given a job delivered a second time under a different Idempotency-Key
    jobs = published(DISTINCT, 3)
    deliveries = [delivered(job, 100.0 + i) for i, job in enumerate(jobs)]
    deliveries.append(delivered(jobs[1], 104.0, key="another-key"))

    # When checked
    outcome = check(DISTINCT, jobs, deliveries, committed=3, finished=True)

    # Then it is flagged by content, and the wrong key too
    assert any(e.startswith("DUPLICATES") for e in outcome.errors)
    assert any("Idempotency-Key is not their job_id" in e for e in outcome.errors)


def test_a_committed_job_never_sent_is_lost_even_at_the_deadline() -> None:
    # Given jobs 0 and 2 sent, the group committed past job 1, and the side hit its deadline
    jobs = published(DISTINCT, 4)
    deliveries = [delivered(jobs[0], 100.0), delivered(jobs[2], 101.0)]

    # When checked
    outcome = check(DISTINCT, jobs, deliveries, committed=3, finished=False)

    # Then job 1 is lost; job 3 (not committed) only did not get its turn
    assert [e for e in outcome.errors if e.startswith("LOST: 1 jobs")]
    assert any("deadline: 2 of 4 sent" in n for n in outcome.notes)


def test_one_key_out_of_publish_order_fails() -> None:
    # Given the one key's jobs 0 and 1 arriving in reverse order
    jobs = published(ONE_KEY, 3)
    deliveries = [delivered(jobs[1], 100.0), delivered(jobs[0], 101.0), delivered(jobs[2], 102.0)]

    # When checked
    outcome = check(ONE_KEY, jobs, deliveries, committed=3, finished=True)

    # Then the order check fails
    assert any(e.startswith("ORDER") for e in outcome.errors)


def test_the_flow_rate_ends_at_the_send_completing_99_percent_of_the_jobs() -> None:
    # Given 100 jobs: 99 sent 0.1 s apart, the last one 10 s after them (a hung job)
    jobs = published(DISTINCT, 100)
    deliveries = [delivered(job, 100.0 + i / 10) for i, job in enumerate(jobs[:99])]
    deliveries.append(delivered(jobs[99], 119.8))

    # When checked
    outcome = check(DISTINCT, jobs, deliveries, committed=100, finished=True)

    # Then the flow rate is 98 intervals over 9.8 s; the whole run is 99 over 19.8 s
    assert outcome.errors == []
    assert outcome.flow_rate == pytest.approx(10.0)
    assert outcome.rate == pytest.approx(5.0)


def test_a_stop_in_the_flow_gets_a_note_but_the_hung_tail_does_not() -> None:
    # Given 100 jobs 0.1 s apart with a 3 s stop after the 50th, and the last one 10 s late
    jobs = published(DISTINCT, 100)
    deliveries = [
        delivered(job, 100.0 + i / 10 + (3.0 if i >= 50 else 0.0)) for i, job in enumerate(jobs[:99])
    ]
    deliveries.append(delivered(jobs[99], 125.0))

    # When checked
    outcome = check(DISTINCT, jobs, deliveries, committed=100, finished=True)

    # Then the stop inside the flow window is noted; the late last send is not a stall
    assert outcome.stall_s == pytest.approx(3.1)
    assert "sends stopped for 3.1 s, 4.9 s after the first" in outcome.notes


def test_the_flow_rate_needs_99_percent_of_the_jobs_sent() -> None:
    # Given 98 of 100 jobs sent before the deadline
    jobs = published(DISTINCT, 100)
    deliveries = [delivered(job, 100.0 + i / 10) for i, job in enumerate(jobs[:98])]

    # When checked
    outcome = check(DISTINCT, jobs, deliveries, committed=98, finished=False)

    # Then there is no flow rate, only the whole-run rate over what was sent
    assert outcome.flow_rate is None
    assert outcome.rate is not None


def test_flow_count_rounds_up() -> None:
    assert (flow_count(6000), flow_count(3000), flow_count(40), flow_count(1)) == (5940, 2970, 40, 1)


def test_one_job_in_a_hundred_hangs_each_on_its_own_key() -> None:
    # Given the full hangs scenario
    hangs = next(s for s in FULL if s.hang_every)

    # When its hung jobs are chosen
    seqs = hangs.hung_seqs()

    # Then there is one in each block of 100, and no two share a recipient
    assert [seq // hangs.hang_every for seq in seqs] == list(range(hangs.jobs // hangs.hang_every))
    assert len({seq % hangs.keys for seq in seqs}) == len(seqs)


def test_a_hangs_run_compares_flow_rates_with_its_reference() -> None:
    # Given a hangs run and its reference run at the same concurrency
    cfg = parse_config(["--scenarios", "hangs-200ms"])
    assert isinstance(cfg, Config)
    reference, hangs = cfg.scenarios
    assert hangs.reference == reference.name
    assert hangs.jobs == reference.jobs
    ref = Outcome(reference, "worker", 64, rate=250.0, flow_rate=250.0)
    run = Outcome(hangs, "worker", 64, rate=125.0, flow_rate=225.0)

    # When related
    relate([ref, run], replace(cfg, smoke=False))

    # Then the note gives the flow ratio against the target, and the whole-run ratio beside it
    assert "flow 90 % of keys-200ms-6k (meets the ≥ 80 % target; whole run 50 %)" in run.notes


def test_the_watermark_commits_only_below_the_first_unfinished_offset() -> None:
    # Given offsets 5, 6, 7 in flight
    watermark = Watermark()
    for offset in (5, 6, 7):
        watermark.started(offset)

    # When 6 and 7 finish first, and then 5
    watermark.finished(7)
    watermark.finished(6)
    before = watermark.position
    watermark.finished(5)

    # Then nothing is committable until 5 is done, and then all three are
    assert before is None
    assert watermark.position == 8
