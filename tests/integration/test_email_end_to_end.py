"""The email path on the real broker and store, with the worker run as users run it."""

from __future__ import annotations

import re
import time
from typing import Any

from processors.email.jobs import SendOtpJob
from processors.email.ledger import DeliveryLedger
from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.documents import texts
from tests.fakes.resend_server import FakeResend
from tests.integration.conftest import KAFKA
from tests.integration.jobs import expected_subject, mixed_job
from tests.integration.kafka_tools import group_lag
from tests.polling import eventually

JOB_COUNT = 200


async def test_200_mixed_jobs_are_each_sent_once_and_recorded(
    start_worker: Any,
    publisher: JobPublisher,
    topics: TopicNames,
    fake_resend: FakeResend,
    database: Any,
    run_id: str,
) -> None:
    worker = start_worker()
    jobs = [mixed_job(i, run_id) for i in range(JOB_COUNT)]
    started_s = time.monotonic()
    for job in jobs:
        await publisher.email(job, topic=topics.email_jobs.main)
    # The same job published again: Kafka delivers it twice, the user gets one email.
    await publisher.email(jobs[0], topic=topics.email_jobs.main)

    await eventually(
        lambda: len(fake_resend.deliveries) >= JOB_COUNT, timeout_s=120, what=f"{JOB_COUNT} deliveries"
    )
    elapsed_s = time.monotonic() - started_s
    print(f"\n{JOB_COUNT} jobs delivered in {elapsed_s:.2f}s: {JOB_COUNT / elapsed_s:.1f} jobs/s")

    ledger = DeliveryLedger(database["email_deliveries"], lease_s=30)  # reads what the worker wrote
    by_key = fake_resend.deliveries_by_key()
    assert len(by_key) == JOB_COUNT
    for job in jobs:
        [delivery] = by_key[job.job_id]
        assert delivery.body["to"] == [str(job.to)]
        assert delivery.body["subject"] == expected_subject(job)
        if isinstance(job, SendOtpJob):
            assert job.code in delivery.body["text"]
            assert job.code in delivery.body["html"]

    async def all_sent() -> bool:
        return sum(entry["status"] == "sent" for entry in await ledger.entries()) == JOB_COUNT

    await eventually(all_sent, timeout_s=30, what="every ledger entry to be sent")
    entry = await ledger.get(jobs[0].job_id)
    assert entry is not None
    assert entry["status"] == "sent"
    assert entry["type"] == "SEND_OTP"
    assert entry["recipient"] == str(jobs[0].to)
    assert entry["provider_message_id"] == by_key[jobs[0].job_id][0].email_id
    # The ledger never holds a code or a link's token.
    secrets = {job.code for job in jobs if isinstance(job, SendOtpJob)}
    for document in await ledger.claims.documents():  # every stored document, as stored
        for text in texts(document):
            assert "token=" not in text
            assert not any(code in text for code in secrets)

    # The duplicate was read and committed (Kafka delivered it) but not sent again.
    async def caught_up() -> bool:
        return await group_lag(KAFKA, f"worker-{run_id}", topics.email_jobs.main) == 0

    await eventually(caught_up, timeout_s=30, what="the worker to commit every job")
    assert len(by_key[jobs[0].job_id]) == 1
    requests_for_first = [r for r in fake_resend.requests if r.idempotency_key == jobs[0].job_id]
    assert len(requests_for_first) == 1
    # Whole numbers only: timestamps and message ids in the log are long digit runs.
    logged_numbers = set(re.findall(r"(?<!\d)\d{6}(?!\d)", worker.log()))
    assert not secrets & logged_numbers, "OTP codes must never reach the logs"
