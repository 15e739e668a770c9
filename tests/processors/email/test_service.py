"""The email service with the real ledger: how failures release the claim."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from processors.email.jobs import SendOtpJob
from processors.email.ledger import DeliveryLedger
from processors.email.render import EmailRenderer
from processors.email.senders import OutboxSender, OutgoingEmail
from processors.email.service import EmailService
from processors.errors import TransientError
from processors.templates import TEMPLATES_DIR

pytestmark = pytest.mark.integration

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class BrokenSender:
    """A sender with a bug: it raises something no classifier knows."""

    name = "broken"

    async def send(self, email: OutgoingEmail) -> str:
        raise KeyError("id")

    async def close(self) -> None:
        return None


class FailingSender(BrokenSender):
    async def send(self, email: OutgoingEmail) -> str:
        raise TransientError("Resend answered 503", error_class="Resend503")


def service(ledger: DeliveryLedger, sender: Any, clock_s: float = 0) -> EmailService:
    return EmailService(
        renderer=EmailRenderer(TEMPLATES_DIR),
        sender=sender,
        ledger=ledger,
        email_from="a@example.com",
        clock=lambda: NOW + timedelta(seconds=clock_s),
    )


def job(job_id: str) -> SendOtpJob:
    return SendOtpJob(type="SEND_OTP", job_id=job_id, to="ada@example.com", code="123456")


async def test_a_bug_releases_the_claim_so_a_redelivery_sends_at_once(
    ledger: DeliveryLedger, tmp_path: Path
) -> None:
    with pytest.raises(KeyError):
        await service(ledger, BrokenSender()).process(job("job-1"))
    document = await ledger.get("job-1")
    assert document is not None
    assert (document["status"], document["last_error"]) == ("retrying", "UnexpectedError")
    assert "lease_until" not in document
    assert document["history"] == [
        {"attempt": 1, "at": NOW, "outcome": "retrying", "error": "UnexpectedError", "sent": "unknown"}
    ]
    # One second later, well within the 30 s lease the bug would otherwise have held.
    outcome = await service(ledger, OutboxSender(tmp_path), clock_s=1).process(job("job-1"))
    assert (outcome.already_sent, outcome.attempt) == (False, 2)
    assert (tmp_path / "job-1.eml").exists()


async def test_a_classified_failure_releases_the_claim_with_its_class(
    ledger: DeliveryLedger,
) -> None:
    with pytest.raises(TransientError):
        await service(ledger, FailingSender()).process(job("job-2"))
    document = await ledger.get("job-2")
    assert document is not None
    assert (document["status"], document["last_error"]) == ("retrying", "Resend503")


async def test_a_sent_job_is_answered_with_its_message_id(ledger: DeliveryLedger, tmp_path: Path) -> None:
    first = await service(ledger, OutboxSender(tmp_path)).process(job("job-3"))
    again = await service(ledger, BrokenSender(), clock_s=60).process(job("job-3"))
    assert (again.already_sent, again.provider_message_id, again.attempt) == (
        True,
        first.provider_message_id,
        1,
    )
