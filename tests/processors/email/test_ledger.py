"""The delivery ledger on the real MongoDB-wire store: at most one sender per job."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from processors.claims import ClaimOutcome
from processors.email.jobs import SendOtpJob
from processors.email.ledger import DeliveryLedger
from processors.email.render import EmailRenderer
from processors.email.senders import OutboxSender, ResendSender
from processors.email.service import EmailService
from processors.errors import TransientError
from processors.templates import TEMPLATES_DIR
from tests.documents import texts
from tests.fakes.resend_server import FakeResend
from tests.processors.email.conftest import LEASE_S

pytestmark = pytest.mark.integration

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def claim(ledger: DeliveryLedger, job_id: str, now: datetime = NOW) -> Any:
    return await ledger.claim(job_id=job_id, email_type="SEND_OTP", recipient="ada@example.com", now=now)


async def test_of_many_concurrent_claims_exactly_one_wins(ledger: DeliveryLedger) -> None:
    outcomes = await asyncio.gather(*(claim(ledger, "job-1") for _ in range(20)), return_exceptions=True)
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    held = [o for o in outcomes if isinstance(o, TransientError)]
    assert len(winners) == 1
    assert winners[0].outcome is ClaimOutcome.CLAIMED
    assert len(held) == 19
    assert {e.error_class for e in held} == {"ClaimHeld"}
    assert all(0 < (e.retry_after_ms or 0) <= 30_000 for e in held)


async def test_a_sent_job_is_never_claimed_again(ledger: DeliveryLedger) -> None:
    first = await claim(ledger, "job-2")
    await ledger.mark_sent(
        job_id="job-2", attempt=first.attempt, provider="resend", provider_message_id="m-1", now=NOW
    )
    again = await claim(ledger, "job-2", NOW + timedelta(days=1))
    assert again.outcome is ClaimOutcome.ALREADY_DONE
    assert again.document["provider_message_id"] == "m-1"
    document = await ledger.get("job-2")
    assert document is not None
    assert document["status"] == "sent"
    assert [h["outcome"] for h in document["history"]] == ["sent"]


async def test_an_expired_lease_can_be_taken_over_and_attempts_are_counted(ledger: DeliveryLedger) -> None:
    await claim(ledger, "job-3")
    with pytest.raises(TransientError):
        await claim(ledger, "job-3", NOW + timedelta(seconds=10))
    taken = await claim(ledger, "job-3", NOW + timedelta(seconds=31))
    assert taken.outcome is ClaimOutcome.CLAIMED
    assert taken.attempt == 2


async def test_a_failed_attempt_is_recorded_and_the_job_can_be_claimed_again(
    ledger: DeliveryLedger,
) -> None:
    first = await claim(ledger, "job-4")
    await ledger.mark_failed(
        job_id="job-4", attempt=first.attempt, error_class="Resend503", permanent=False, now=NOW
    )
    second = await claim(ledger, "job-4", NOW + timedelta(seconds=1))
    assert second.attempt == 2
    document = await ledger.get("job-4")
    assert document is not None
    assert document["history"] == [
        {"attempt": 1, "at": NOW, "outcome": "retrying", "error": "Resend503", "sent": "unknown"}
    ]


async def test_two_workers_racing_on_one_job_send_one_email(
    ledger: DeliveryLedger, fake_resend: FakeResend
) -> None:
    fake_resend.state.latency_s = 0.2  # both are in flight at once
    sender = ResendSender(SecretStr("re_test"), fake_resend.url, timeout_s=5)
    service = EmailService(
        renderer=EmailRenderer(TEMPLATES_DIR),
        sender=sender,
        ledger=ledger,
        email_from="a@example.com",
    )
    job = SendOtpJob(type="SEND_OTP", job_id="job-5", to="ada@example.com", code="123456")
    try:
        outcomes = await asyncio.gather(service.process(job), service.process(job), return_exceptions=True)
    finally:
        await sender.close()
    assert len(fake_resend.requests) == 1
    assert sum(1 for o in outcomes if isinstance(o, TransientError)) == 1


async def test_processing_never_logs_the_code(
    ledger: DeliveryLedger, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = EmailService(
        renderer=EmailRenderer(TEMPLATES_DIR),
        sender=OutboxSender(tmp_path),
        ledger=ledger,
        email_from="a@example.com",
    )
    job = SendOtpJob(type="SEND_OTP", job_id="job-6", to="ada@example.com", code="918273")
    with caplog.at_level(logging.DEBUG):
        await service.process(job)
        await service.process(job)
    assert "918273" in (tmp_path / "job-6.eml").read_text()
    assert caplog.records, "processing logs what it does"
    assert all("918273" not in record.getMessage() for record in caplog.records)
    # Nor does any stored document, in any bucket.
    stored = await ledger.claims.documents()
    assert {d["job_id"] for d in stored} == {"job-6"}
    assert not any("918273" in text for text in texts(stored))


async def test_a_first_claim_stores_the_whole_entry(ledger: DeliveryLedger) -> None:
    claimed = await claim(ledger, "job-7")
    assert (claimed.outcome, claimed.attempt) == (ClaimOutcome.CLAIMED, 1)
    entry = {
        "_id": "job-7",
        "job_id": "job-7",
        "type": "SEND_OTP",
        "recipient": "ada@example.com",
        "status": "sending",
        "attempts": 1,
        "lease_until": NOW + timedelta(seconds=LEASE_S),
        "created_at": NOW,
        "updated_at": NOW,
        "history": [],
    }
    assert claimed.document == entry
    assert await ledger.get("job-7") == entry


async def test_a_sent_entry_has_the_fields_operators_read(ledger: DeliveryLedger) -> None:
    first = await claim(ledger, "job-8")
    await ledger.mark_failed(
        job_id="job-8", attempt=first.attempt, error_class="Resend503", permanent=False, now=NOW
    )
    second = await claim(ledger, "job-8", NOW + timedelta(seconds=2))
    sent_at = NOW + timedelta(seconds=3)
    await ledger.mark_sent(
        job_id="job-8", attempt=second.attempt, provider="resend", provider_message_id="m-8", now=sent_at
    )
    assert await ledger.get("job-8") == {
        "_id": "job-8",
        "job_id": "job-8",
        "type": "SEND_OTP",
        "recipient": "ada@example.com",
        "status": "sent",
        "attempts": 2,
        "provider": "resend",
        "provider_message_id": "m-8",
        "sent_at": sent_at,
        "created_at": NOW,
        "updated_at": sent_at,
        "history": [
            {"attempt": 1, "at": NOW, "outcome": "retrying", "error": "Resend503", "sent": "unknown"},
            {"attempt": 2, "at": sent_at, "outcome": "sent"},
        ],
    }
    assert [(e["job_id"], e["status"]) for e in await ledger.entries()] == [("job-8", "sent")]


async def test_the_entries_live_in_daily_buckets_named_after_the_collection(
    ledger: DeliveryLedger, collection: Any
) -> None:
    await claim(ledger, "job-9")
    names = await collection.database.list_collection_names()
    assert {"email_deliveries_20251231", "email_deliveries_20260101"} <= set(names)
    assert "email_deliveries" not in names
