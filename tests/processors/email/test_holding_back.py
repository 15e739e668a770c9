"""What the email service holds back: expired codes and links, codes a newer one
superseded, and mail to suppressed addresses. With the real ledger, and the outbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from processors.email.jobs import SendOtpJob, WelcomeEmailJob
from processors.email.ledger import DeliveryLedger
from processors.email.render import EmailRenderer
from processors.email.senders import OutboxSender
from processors.email.service import EmailService
from processors.errors import Expired, Suppressed, TransientError
from processors.templates import TEMPLATES_DIR

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


class Codes:
    """`CodeHistory` in memory: what was recorded, by key."""

    def __init__(self) -> None:
        self.sent: dict[str, list[int]] = {}

    async def newer_sent(self, key: str, issued_at_ms: int, now: datetime) -> bool:
        return any(at > issued_at_ms for at in self.sent.get(key, []))

    async def record_sent(self, key: str, issued_at_ms: int, job_id: str, now: datetime) -> None:
        self.sent.setdefault(key, []).append(issued_at_ms)


class Suppressions:
    def __init__(self, *addresses: str) -> None:
        self.addresses = set(addresses)

    async def is_suppressed(self, address: str) -> bool:
        return address.lower() in self.addresses


def service(
    ledger: DeliveryLedger,
    outbox: Path,
    *,
    codes: Codes | None = None,
    suppressed: Suppressions | None = None,
) -> EmailService:
    return EmailService(
        renderer=EmailRenderer(TEMPLATES_DIR),
        sender=OutboxSender(outbox),
        ledger=ledger,
        email_from="a@example.com",
        codes=codes or Codes(),
        suppressions=suppressed or Suppressions(),
        clock=lambda: NOW,
    )


def otp(job_id: str, *, minutes: int = 10, purpose: str = "sign-in", **more: object) -> SendOtpJob:
    return SendOtpJob.model_validate(
        {
            "type": "SEND_OTP",
            "job_id": job_id,
            "to": "ada@example.com",
            "code": "123456",
            "expires_in_minutes": minutes,
            "purpose": purpose,
            **more,
        }
    )


async def test_a_code_published_longer_ago_than_its_life_is_not_sent(
    ledger: DeliveryLedger, tmp_path: Path
) -> None:
    worker = service(ledger, tmp_path)
    with pytest.raises(Expired) as caught:
        await worker.process(otp("old", minutes=5), published_at=NOW - timedelta(minutes=5, seconds=1))
    assert caught.value.reason == "expired"
    assert not list(tmp_path.iterdir())
    document = await ledger.get("old")
    assert document is not None
    assert (document["status"], document["last_error"]) == ("failed", "Expired")
    # Still alive: sent.
    outcome = await worker.process(otp("young", minutes=5), published_at=NOW - timedelta(minutes=4))
    assert outcome.provider_message_id is not None
    assert worker.counts == {"expired": 1, "sent": 1}


async def test_not_after_wins_over_the_lifetime(ledger: DeliveryLedger, tmp_path: Path) -> None:
    worker = service(ledger, tmp_path)
    with pytest.raises(Expired):
        await worker.process(otp("cut", not_after=NOW - timedelta(seconds=1)), published_at=NOW)
    welcome = WelcomeEmailJob(type="WELCOME_EMAIL", job_id="w", to="ada@example.com", name="Ada")
    assert (await worker.process(welcome, published_at=NOW - timedelta(days=30))).dropped is None


async def test_a_failure_carries_the_deadline_for_the_retry_decision(
    ledger: DeliveryLedger, tmp_path: Path
) -> None:
    class Down(OutboxSender):
        async def send(self, email: object) -> str:  # type: ignore[override]
            raise TransientError("Resend answered 503", error_class="Resend503")

    worker = EmailService(
        renderer=EmailRenderer(TEMPLATES_DIR),
        sender=Down(tmp_path),
        ledger=ledger,
        email_from="a@example.com",
        clock=lambda: NOW,
    )
    published = NOW - timedelta(minutes=1)
    with pytest.raises(TransientError) as caught:
        await worker.process(otp("down", minutes=10), published_at=published)
    assert caught.value.deadline_ms == int((published + timedelta(minutes=10)).timestamp() * 1000)


async def test_an_older_code_after_a_newer_one_was_sent_is_dropped(
    ledger: DeliveryLedger, tmp_path: Path
) -> None:
    codes = Codes()
    worker = service(ledger, tmp_path, codes=codes)
    await worker.process(otp("newer"), published_at=NOW - timedelta(seconds=10))
    older = await worker.process(otp("older"), published_at=NOW - timedelta(seconds=20))
    assert older.dropped == "superseded"
    # Another purpose is another code; and a code newer than the last one sent goes out.
    reset = await worker.process(
        otp("reset", purpose="password-reset"), published_at=NOW - timedelta(seconds=30)
    )
    newest = await worker.process(otp("newest"), published_at=NOW - timedelta(seconds=5))
    assert (reset.dropped, newest.dropped) == (None, None)
    assert {p.stem for p in tmp_path.iterdir()} == {"newer", "newest", "reset"}
    assert worker.counts == {"sent": 3, "superseded": 1}
    document = await ledger.get("older")
    assert document is not None
    assert (document["status"], document["last_error"]) == ("failed", "Superseded")
    assert "123456" not in repr(document)
    assert "123456" not in repr(codes.sent)


async def test_a_suppressed_address_gets_nothing_unless_the_job_overrides(
    ledger: DeliveryLedger, tmp_path: Path
) -> None:
    worker = service(ledger, tmp_path, suppressed=Suppressions("ada@example.com"))
    with pytest.raises(Suppressed) as caught:
        await worker.process(otp("held"), published_at=NOW)
    assert caught.value.reason == "suppressed"
    assert "ada@example.com" not in caught.value.message
    outcome = await worker.process(otp("asked", transactional_override=True), published_at=NOW)
    assert outcome.provider_message_id is not None
    assert {p.stem for p in tmp_path.iterdir()} == {"asked"}
