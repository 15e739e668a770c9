"""The benchmark's own checks catch what they claim to: duplicates, losses, order; the watermark."""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmarks.throughput import (
    FULL,
    SMOKE,
    Config,
    Job,
    Outcome,
    Scenario,
    Watermark,
    analyse,
    budget_checks,
    flow_count,
    make_job,
    parse_config,
    partition_tails,
    plan,
    provider_figures,
    relate,
    slot_figures,
    worker_env,
)
from tests.fakes.resend_server import BATCH_PATH, Delivery, Request

DISTINCT = FULL[0]
ONE_KEY = next(s for s in FULL if s.ordered)
BY_NAME = {s.name: s for s in FULL}
LIMITED = BY_NAME["limited-2rps"]
CHAOS = BY_NAME["batch-chaos"]


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


def batch_call(jobs: list[Job], arrived_s: float, status: int = 200, *, hung_s: float = 0.0) -> Request:
    body = [{"to": [job.recipient], "subject": f"Welcome to Acme, Reader n{job.seq:07d}"} for job in jobs]
    return Request(
        arrived_s + 0.05,
        f"batch-{arrived_s}",
        None,
        body,
        status,
        arrived_s=arrived_s,
        hung_s=hung_s,
        path=BATCH_PATH,
        emails=len(body),
    )


def batch_deliveries(call: Request) -> list[Delivery]:
    return [
        Delivery(
            f"id-{call.idempotency_key}-{i}",
            call.idempotency_key,
            entry,
            call.at_s,
            call.arrived_s,
            BATCH_PATH,
            i,
        )
        for i, entry in enumerate(call.body)
    ]


def limited_run(calls: list[Request], jobs: list[Job], scenario: Scenario = LIMITED) -> Outcome:
    """A limited worker run checked the way run_side checks it."""
    outcome = Outcome(scenario, "worker", 256, published=len(jobs), finished=True, dead_letters=0)
    deliveries = [d for call in calls if call.status == 200 for d in batch_deliveries(call)]
    analyse(outcome, jobs, calls, deliveries, {0: len(jobs)}, set(), set(), started_s=0.0)
    provider_figures(outcome, calls, deliveries)
    budget_checks(outcome)
    return outcome


def test_a_limited_run_counts_429s_the_busiest_second_and_batch_sizes() -> None:
    # Given 300 jobs in three batch calls 0.51 s apart, and one call refused with 429 between
    jobs = published(LIMITED, 300)
    calls = [
        batch_call(jobs[:100], 100.0),
        batch_call(jobs[100:200], 100.2, status=429),
        batch_call(jobs[100:200], 100.51),
        batch_call(jobs[200:], 101.02),
    ]

    # When checked
    outcome = limited_run(calls, jobs)

    # Then the 429 is measured, not a failure; the limit held; the batches were full
    assert outcome.errors == []
    assert (outcome.requests, outcome.rate_limited, outcome.rate_limited_pct) == (4, 1, 25.0)
    assert (outcome.max_accepted_1s, outcome.max_arrived_1s) == (2, 3)
    assert outcome.mean_batch == 100.0
    assert outcome.call_sizes == {100: 3}
    assert outcome.accepted_per_s == pytest.approx(2 / 1.02)
    assert outcome.slots_missed == 0


def test_a_gap_between_requests_counts_the_slots_left_unused_and_when() -> None:
    # Given requests 5 ms into slots 200, 201 and 203 of 0.51 s (slot 202 unused)
    outcome = Outcome(LIMITED, "worker", 256)
    accepted = [slot * 0.51 + 0.005 for slot in (200, 201, 203)]

    # When the slots are read
    slot_figures(outcome, accepted, 0.51)

    # Then one slot was unused, 1.02 s after the first request, and each arrived 5 ms in
    assert outcome.slots_missed == 1
    assert outcome.missed_at_s == [1.02]
    assert outcome.slot_lag_ms == [pytest.approx(5.0), pytest.approx(5.0)]
    assert "1 slots unused, from 1.02 s after the first request" in outcome.notes


def test_partition_tails_give_when_each_partition_was_drained() -> None:
    # Given jobs on two partitions, partition 1's last one delivered 3 s after the first
    jobs = [replace(job, partition=job.seq % 2) for job in published(LIMITED, 4)]
    deliveries = [delivered(job, 100.0 + (3.0 if job.seq == 3 else job.seq / 10)) for job in jobs]
    outcome = Outcome(LIMITED, "worker", 256)

    # When read
    partition_tails(outcome, jobs, deliveries)

    # Then partition 0 was done at 0.2 s, partition 1 at 3 s
    assert outcome.partition_done_s == {0: 0.2, 1: 3.0}


def test_a_limited_run_fails_on_an_email_sent_twice_a_dead_letter_or_a_second_over_the_limit() -> None:
    # Given two jobs sent in two batch calls, job 0 in both, and a record in the DLQ
    jobs = published(LIMITED, 2)
    calls = [batch_call(jobs, 100.0), batch_call(jobs[:1], 100.1)]
    outcome = Outcome(LIMITED, "worker", 256, published=2, finished=True, dead_letters=1)
    deliveries = [d for call in calls for d in batch_deliveries(call)]

    # When checked, with the fake counting three requests accepted within a second
    provider_figures(outcome, calls, deliveries)
    outcome.max_accepted_1s = 3
    budget_checks(outcome)

    # Then each is a failed check
    assert outcome.duplicates == 1
    assert any(e.startswith("DUPLICATES: 1 emails delivered twice") for e in outcome.errors)
    assert any(e.startswith("DEAD LETTERS: 1") for e in outcome.errors)
    assert any(e.startswith("OVER THE LIMIT: 3") for e in outcome.errors)


def test_chaos_fails_on_a_job_never_delivered_and_on_kills_that_came_too_late() -> None:
    # Given a chaos run that stopped with one of three jobs undelivered, after 2 of its kills
    jobs = published(CHAOS, 3)
    outcome = Outcome(CHAOS, "worker", 64, published=3, finished=False, dead_letters=0)
    outcome.kills = ["#1", "#2"]
    deliveries = batch_deliveries(batch_call(jobs[:2], 100.0))
    analyse(outcome, jobs, [], deliveries, {0: 0}, set(), set(), started_s=0.0)

    # When checked
    budget_checks(outcome)

    # Then the lost job and the missing kills fail it
    assert "LOST: 1 jobs never delivered" in outcome.errors
    assert "only 2 of 6 kills came before every job was sent" in outcome.errors


def judged(rate: float, cap: float | None, *, limited_pct: float = 0.0) -> Outcome:
    cfg = parse_config(["--scenarios", "limited-2rps"])
    assert isinstance(cfg, Config)
    reference, scenario = cfg.scenarios
    outcomes = []
    if cap is not None:
        outcomes.append(Outcome(reference, "worker", 256, rate=cap, busy_pct=99.0, finished=True))
    run = Outcome(scenario, "worker", 256, rate=rate, finished=True, dead_letters=0, max_accepted_1s=2)
    run.rate_limited_pct = limited_pct
    outcomes.append(run)
    relate(outcomes, replace(cfg, smoke=False))
    return run


def test_the_limited_goal_is_190_per_s_when_the_stack_can_go_faster() -> None:
    # Given the unlimited run at 400/s: the stack is not the limit
    assert judged(192.0, cap=400.0).goal == "met"
    below = judged(185.0, cap=400.0)

    # Then 185/s is below 190/s
    assert below.goal == "BELOW"
    assert any("**BELOW** ≥ 190 emails/s (185.0; no cap below 200/s" in n for n in below.notes)


def test_below_200_per_s_without_the_limit_the_goal_is_95_percent_of_that_cap() -> None:
    # Given the unlimited run at 150/s on this machine
    run = judged(145.0, cap=150.0)

    # Then the target is 142.5/s, met, and the cap is shown
    assert run.goal == "met"
    assert run.cap_per_s == 150.0
    assert any("≥ 142 emails/s (145.0; 95 % of the stack's cap here" in n for n in run.notes)


def test_too_many_429s_miss_the_goal() -> None:
    assert judged(195.0, cap=None, limited_pct=2.5).goal == "BELOW"


def test_limited_scenarios_run_the_worker_alone_at_their_own_settings() -> None:
    # Given the limited scenarios, chosen by name
    cfg = parse_config(["--scenarios", "limited-2rps,limited-2rps-3p,batch-chaos"])
    assert isinstance(cfg, Config)

    # When planned
    runs = plan(cfg)

    # Then the cap reference comes first, and every run is the worker's, at its concurrency
    assert [(s.name, side, c) for s, side, c in runs] == [
        ("nolimit-50ms", "worker", 128),
        ("limited-2rps", "worker", 128),
        ("limited-2rps-3p", "worker", 128),
        ("batch-chaos", "worker", 64),
    ]
    env = worker_env(cfg, CHAOS, "p.", "g", "db", "http://fake", 64)
    assert env["RESEND_RATE_LIMIT_PER_S"] == "2"
    assert (env["RESEND_BATCH_MAX"], env["RESEND_TIMEOUT_S"], env["EMAIL_SEND_LEASE_S"]) == ("10", "2", "4")
    assert (
        worker_env(cfg, runs[0][0], "p.", "g", "db", "http://fake", 256)["RESEND_RATE_LIMIT_PER_S"] == "1000"
    )


def test_the_smoke_goes_through_the_budget_path() -> None:
    assert any(s.limited and s.worker_only and s.processes == 1 for s in SMOKE)
