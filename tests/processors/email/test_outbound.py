"""Sending within the rate budget, in batches, effectively once: the email service with the
real ledger (on the local store) and the SDK against the local fake Resend."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from processors.email.budget import SlotBudget
from processors.email.jobs import SendOtpJob, WelcomeEmailJob
from processors.email.ledger import DeliveryLedger, pending_batch
from processors.email.outbound import Outbound
from processors.email.render import EmailRenderer
from processors.email.senders import ResendSender
from processors.email.service import EmailOutcome, EmailService
from processors.errors import PermanentError, TransientError
from processors.templates import TEMPLATES_DIR
from tests.fakes.resend_server import FakeResend, Reply

pytestmark = pytest.mark.integration


class Worker:
    """One worker's email processor: a budget it owns whole, batching on."""

    def __init__(
        self,
        ledger: DeliveryLedger,
        fake: FakeResend,
        *,
        rate_per_s: float = 20,
        timeout_s: float = 5,
        batch_prefix: str = "b",
        max_batch: int = 100,
    ) -> None:
        self.sender = ResendSender(SecretStr("re_test"), fake.url, timeout_s=timeout_s)
        self.budget = SlotBudget(rate_per_s)
        self.budget.assign([0], 1)
        self.batch_ids = (f"{batch_prefix}{n}" for n in itertools.count())
        self.outbound = Outbound(
            self.sender,
            budget=self.budget,
            ledger=ledger,
            max_batch=max_batch,
            new_batch_id=lambda: next(self.batch_ids),
        )
        self.service = EmailService(
            renderer=EmailRenderer(TEMPLATES_DIR),
            sender=self.sender,
            ledger=ledger,
            email_from="Acme <no-reply@example.com>",
            outbound=self.outbound,
        )

    async def process_all(self, jobs: list[SendOtpJob]) -> list[EmailOutcome | BaseException]:
        """Process `jobs` at once; they find the budget busy for half a second, so they wait
        for it together (a job that finds a slot at hand goes alone)."""
        self.budget.pause_until(time.time() + 0.5)
        return await asyncio.gather(*(self.service.process(j) for j in jobs), return_exceptions=True)

    async def close(self) -> None:
        await self.outbound.close()
        await self.sender.close()


@pytest.fixture
async def worker(ledger: DeliveryLedger, fake_resend: FakeResend) -> AsyncIterator[Worker]:
    built = Worker(ledger, fake_resend)
    yield built
    await built.close()


def otp_jobs(count: int, prefix: str = "job") -> list[SendOtpJob]:
    return [
        SendOtpJob(type="SEND_OTP", job_id=f"{prefix}-{n}", to=f"user{n}@example.com", code=f"{n:06d}")
        for n in range(count)
    ]


def batch_calls(fake: FakeResend) -> list[int]:
    return [r.emails for r in fake.requests if r.path == "/emails/batch" and r.status == 200]


async def test_jobs_waiting_for_the_budget_go_out_in_one_batch_call(
    worker: Worker, fake_resend: FakeResend, ledger: DeliveryLedger
) -> None:
    jobs = otp_jobs(30)
    outcomes = await worker.process_all(jobs)
    assert all(isinstance(o, EmailOutcome) and not o.already_sent for o in outcomes), outcomes
    # The budget has 20 slots a second: the 30 jobs fit in a call or two, not 30.
    assert len(fake_resend.requests) <= 3
    assert sum(batch_calls(fake_resend)) + len([r for r in fake_resend.requests if r.path == "/emails"]) == 30
    assert fake_resend.duplicates_by_content() == {}
    assert {d.body["subject"] for d in fake_resend.deliveries}  # rendered, not empty
    for job in jobs:
        entry = await ledger.get(job.job_id)
        assert entry is not None
        assert entry["status"] == "sent"


async def test_a_rate_limit_pauses_sending_and_costs_no_attempt(
    ledger: DeliveryLedger, fake_resend: FakeResend
) -> None:
    # The budget believes in 20 requests a second; the provider allows 2.
    fake_resend.set_rate_limit(2)
    worker = Worker(ledger, fake_resend, rate_per_s=20, max_batch=1)
    try:
        outcomes = await worker.process_all(otp_jobs(6))
    finally:
        await worker.close()
    assert all(isinstance(o, EmailOutcome) and o.attempt == 1 for o in outcomes), outcomes
    assert fake_resend.count_by_status().get(429, 0) >= 1
    assert worker.outbound.stats().rate_limited >= 1
    assert fake_resend.delivery_count == 6
    assert fake_resend.max_accepted_in_any_window() <= 2


async def test_a_batch_whose_answer_was_lost_is_repeated_as_recorded_and_sent_once(
    ledger: DeliveryLedger, fake_resend: FakeResend
) -> None:
    # The provider takes the batch but the answer never arrives in time.
    worker = Worker(ledger, fake_resend, timeout_s=0.5, batch_prefix="lost")
    try:
        await lost_batch_is_repeated(worker, fake_resend, ledger)
    finally:
        await worker.close()


async def lost_batch_is_repeated(worker: Worker, fake_resend: FakeResend, ledger: DeliveryLedger) -> None:
    fake_resend.hang("batch-lost0", 1.0)
    jobs = otp_jobs(5)
    outcomes = await worker.process_all(jobs)
    assert all(isinstance(o, TransientError) for o in outcomes), outcomes
    document = await ledger.get("job-3")
    assert document is not None
    assert pending_batch(document) is not None
    # Wait until the hung call was answered at the provider (it delivered the batch).
    async with asyncio.timeout(10):
        while fake_resend.delivery_count < 5:
            await asyncio.sleep(0.05)
    # The retry of one member repeats the call: the provider replays it, and every member is done.
    again = await worker.service.process(jobs[3])
    assert isinstance(again, EmailOutcome)
    assert not again.already_sent
    repeated = [r for r in fake_resend.requests if r.idempotency_key == "batch-lost0"]
    assert len(repeated) == 2
    assert repeated[0].body == repeated[1].body
    for other in (jobs[0], jobs[4]):
        outcome = await worker.service.process(other)
        assert outcome.already_sent
    assert len([r for r in fake_resend.requests if r.idempotency_key == "batch-lost0"]) == 2
    assert fake_resend.delivery_count == 5
    assert fake_resend.duplicates_by_content() == {}


async def test_a_batch_recorded_but_never_sent_is_sent_by_the_next_attempt(
    worker: Worker, fake_resend: FakeResend, ledger: DeliveryLedger
) -> None:
    # The provider is down: the recorded batch's answer is a 503, the outcome unknown.
    fake_resend.script("batch-b0", Reply(503))
    jobs = otp_jobs(3)
    outcomes = await worker.process_all(jobs)
    assert all(isinstance(o, TransientError) for o in outcomes)
    assert fake_resend.delivery_count == 0
    retried = await asyncio.gather(*(worker.service.process(j) for j in jobs))
    assert sorted(o.already_sent for o in retried) in ([False, True, True], [False, False, False])
    assert fake_resend.delivery_count == 3
    assert fake_resend.duplicates_by_content() == {}
    keys = {r.idempotency_key for r in fake_resend.requests}
    assert keys == {"batch-b0"}, "never sent alone, nor in another batch"


async def test_a_refused_entry_fails_alone_and_its_replay_is_sent_alone(
    worker: Worker, fake_resend: FakeResend, ledger: DeliveryLedger
) -> None:
    fake_resend.reject_address("user1@example.com", "The address is on the suppression list")
    jobs = otp_jobs(3)
    outcomes = await worker.process_all(jobs)
    assert isinstance(outcomes[1], PermanentError)
    assert "user1@example.com" not in outcomes[1].message
    assert all(isinstance(o, EmailOutcome) for o in (outcomes[0], outcomes[2]))
    document = await ledger.get("job-1")
    assert document is not None
    assert document["status"] == "failed"
    assert pending_batch(document) is None
    # A replay from the DLQ, once the provider accepts the address: sent alone, with its key.
    fake_resend.state.rejected.clear()
    replayed = await worker.service.process(jobs[1])
    assert isinstance(replayed, EmailOutcome)
    assert replayed.attempt == 2
    assert fake_resend.requests[-1].path == "/emails"
    assert fake_resend.requests[-1].idempotency_key == "job-1"
    assert fake_resend.delivery_count == 3


async def test_a_retried_job_is_never_batched(ledger: DeliveryLedger, fake_resend: FakeResend) -> None:
    fake_resend.script("job-0", Reply(503))
    # The SDK keeps its HTTP client in a module global: one worker at a time.
    first = Worker(ledger, fake_resend, max_batch=1)
    job = otp_jobs(1)[0]
    try:
        with pytest.raises(TransientError):
            await first.service.process(job)
    finally:
        await first.close()
    worker = Worker(ledger, fake_resend)
    # Its retry comes with new jobs, in a worker that batches: it still goes alone.
    try:
        outcomes = await worker.process_all([job, *otp_jobs(4, prefix="new")])
    finally:
        await worker.close()
    assert all(isinstance(o, EmailOutcome) for o in outcomes), outcomes
    alone = [r for r in fake_resend.requests if r.path == "/emails" and r.status == 200]
    assert [r.idempotency_key for r in alone] == ["job-0"]
    assert fake_resend.delivery_count == 5


async def test_members_of_one_batch_repeat_it_once_per_worker(
    worker: Worker, fake_resend: FakeResend
) -> None:
    fake_resend.script("batch-b0", Reply(500))
    jobs = otp_jobs(20)
    await worker.process_all(jobs)
    started = datetime.now(UTC)
    outcomes = await worker.process_all(jobs)
    assert all(isinstance(o, EmailOutcome) for o in outcomes), outcomes
    calls = [r for r in fake_resend.requests if r.idempotency_key == "batch-b0"]
    assert len(calls) == 2, f"{len(calls)} calls for one batch (since {started})"
    assert worker.outbound.stats().repeats == 1


async def test_a_job_cancelled_while_waiting_for_the_budget_is_not_sent(
    ledger: DeliveryLedger, fake_resend: FakeResend
) -> None:
    worker = Worker(ledger, fake_resend, rate_per_s=0.5)  # a slot every 2 s
    try:
        jobs = otp_jobs(3)
        worker.budget.pause_until(time.time() + 1.5)  # no slot near: the three queue
        tasks = [asyncio.create_task(worker.service.process(j)) for j in jobs]
        async with asyncio.timeout(5):
            while worker.outbound.stats().queued < 3:
                await asyncio.sleep(0.01)
        tasks[1].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await worker.close()
    assert isinstance(done[1], asyncio.CancelledError)
    assert all(isinstance(o, EmailOutcome) for o in (done[0], done[2]))
    assert sorted(d.body["to"][0] for d in fake_resend.deliveries) == [
        "user0@example.com",
        "user2@example.com",
    ]
    document = await ledger.get("job-1")
    assert document is not None
    assert document["status"] == "retrying"
    assert document["history"][-1]["sent"] == "no", "cut off before it was handed over"
    assert pending_batch(document) is None
    # So its next attempt may still join a batch.
    again = Worker(ledger, fake_resend, rate_per_s=0.5, batch_prefix="again-")
    try:
        retried = await again.process_all([jobs[1], *otp_jobs(2, prefix="later")])
    finally:
        await again.close()
    assert all(isinstance(o, EmailOutcome) for o in retried), retried
    assert [r.emails for r in fake_resend.requests if r.path == "/emails/batch"][-1] == 3


async def test_a_job_that_finds_a_slot_at_hand_goes_alone_at_once(
    ledger: DeliveryLedger, fake_resend: FakeResend
) -> None:
    worker = Worker(ledger, fake_resend, rate_per_s=1000)  # a budget far above the load
    try:
        for job in otp_jobs(5):
            outcome = await worker.service.process(job)
            assert not outcome.already_sent
    finally:
        await worker.close()
    assert [(r.path, r.idempotency_key) for r in fake_resend.requests] == [
        ("/emails", f"job-{n}") for n in range(5)
    ]
    assert worker.outbound.stats().batches_sent == 0


async def test_a_batch_that_cannot_be_recorded_fails_its_jobs_and_batching_goes_on(
    ledger: DeliveryLedger, fake_resend: FakeResend
) -> None:
    first = Worker(ledger, fake_resend, batch_prefix="same-")
    try:
        assert all(isinstance(o, EmailOutcome) for o in await first.process_all(otp_jobs(2, prefix="a")))
    finally:
        await first.close()
    # A second worker whose first batch id is taken: the record fails (a duplicate key).
    second = Worker(ledger, fake_resend, batch_prefix="same-")
    try:
        failed = await second.process_all(otp_jobs(2, prefix="b"))
        assert all(isinstance(o, TransientError) for o in failed), failed
        later = await second.process_all(otp_jobs(2, prefix="c"))
    finally:
        await second.close()
    assert all(isinstance(o, EmailOutcome) for o in later), later
    assert fake_resend.delivery_count == 4, "the b jobs were never sent"


async def test_a_code_goes_into_the_next_batch_ahead_of_the_bulk_mail_waiting(
    ledger: DeliveryLedger, fake_resend: FakeResend
) -> None:
    worker = Worker(ledger, fake_resend, rate_per_s=4, max_batch=10)
    welcomes = [
        WelcomeEmailJob(type="WELCOME_EMAIL", job_id=f"welcome-{n}", to=f"reader{n}@example.com", name="Ada")
        for n in range(40)
    ]
    code = SendOtpJob(type="SEND_OTP", job_id="code-1", to="ada@example.com", code="482913")
    try:
        worker.budget.pause_until(time.time() + 0.5)
        bulk = [asyncio.create_task(worker.service.process(job)) for job in welcomes]
        while worker.outbound.stats().queued < len(welcomes):
            await asyncio.sleep(0.01)
        outcome = await worker.service.process(code)
        await asyncio.gather(*bulk)
    finally:
        await worker.close()
    assert outcome.provider_message_id is not None
    [delivered] = [d for d in fake_resend.deliveries if "482913" in str(d.body)]
    batches = [d.arrived_s for d in fake_resend.deliveries]
    # Queued last, sent in the first call: the bulk mail waits, not the code.
    assert delivered.arrived_s == min(batches)
    assert fake_resend.delivery_count == 41
