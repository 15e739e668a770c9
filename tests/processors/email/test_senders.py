"""Senders: Resend's wire format and error classification (against a local fake Resend)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from processors.email.render import RenderedEmail
from processors.email.senders import OutboxSender, OutgoingEmail, ResendSender
from processors.errors import PermanentError, TransientError
from tests.fakes.http import FakeHandler
from tests.fakes.resend_server import FakeResend, Reply

CONTENT = RenderedEmail(subject="Your code", html="<p>code 123456</p>", text="code 123456\n")


def outgoing(key: str = "job-1") -> OutgoingEmail:
    return OutgoingEmail(
        idempotency_key=key, sender="Acme <no-reply@example.com>", to="ada@example.com", content=CONTENT
    )


@pytest.fixture
async def sender(fake_resend: FakeResend) -> AsyncIterator[ResendSender]:
    resend_sender = ResendSender(SecretStr("re_test_key"), fake_resend.url, timeout_s=2.0)
    yield resend_sender
    await resend_sender.close()


async def test_resend_request_carries_idempotency_key_recipient_subject_and_both_parts(
    sender: ResendSender, fake_resend: FakeResend
) -> None:
    message_id = await sender.send(outgoing("job-1"))
    [request] = fake_resend.requests
    assert request.idempotency_key == "job-1"
    assert request.authorization == "Bearer re_test_key"
    assert request.body["to"] == ["ada@example.com"]
    assert request.body["from"] == "Acme <no-reply@example.com>"
    assert request.body["subject"] == "Your code"
    assert request.body["html"] == CONTENT.html
    assert request.body["text"] == CONTENT.text
    assert message_id == fake_resend.deliveries[0].email_id


async def test_resending_with_the_same_key_delivers_once(
    sender: ResendSender, fake_resend: FakeResend
) -> None:
    first = await sender.send(outgoing("job-2"))
    second = await sender.send(outgoing("job-2"))
    assert first == second
    assert len(fake_resend.deliveries) == 1


@pytest.mark.parametrize(
    ("reply", "expected", "retry_after_ms"),
    [
        (Reply(429, retry_after_s=2), TransientError, 2_000),
        (Reply(429, error_name="daily_quota_exceeded", retry_after_s=60), TransientError, 60_000),
        (Reply(500), TransientError, None),
        (Reply(502, error_name="bad_gateway"), TransientError, None),
        (Reply(503), TransientError, None),
        (Reply(409, error_name="concurrent_idempotent_requests"), TransientError, 1_000),
        (Reply(400), PermanentError, None),
        (Reply(401), PermanentError, None),
        (Reply(403), PermanentError, None),
        (Reply(404, error_name="not_found"), PermanentError, None),
        (Reply(409), PermanentError, None),
        (Reply(422), PermanentError, None),
        (Reply(451, error_name="security_error"), PermanentError, None),
    ],
)
async def test_each_resend_status_is_classified(
    sender: ResendSender,
    fake_resend: FakeResend,
    reply: Reply,
    expected: type[Exception],
    retry_after_ms: int | None,
) -> None:
    fake_resend.script("job-3", reply)
    with pytest.raises(expected) as caught:
        await sender.send(outgoing("job-3"))
    error = caught.value
    assert str(reply.status) in error.error_class  # type: ignore[attr-defined]
    if isinstance(error, TransientError):
        assert error.retry_after_ms == retry_after_ms


async def test_unreachable_provider_is_transient() -> None:
    unreachable = ResendSender(SecretStr("re_test_key"), "http://127.0.0.1:9", timeout_s=1.0)
    try:
        with pytest.raises(TransientError) as caught:
            await unreachable.send(outgoing())
    finally:
        await unreachable.close()
    assert caught.value.error_class == "ResendNetworkError"


async def test_slow_provider_times_out_as_transient(fake_resend: FakeResend) -> None:
    fake_resend.state.latency_s = 1.0
    slow = ResendSender(SecretStr("re_test_key"), fake_resend.url, timeout_s=0.2)
    try:
        with pytest.raises(TransientError):
            await slow.send(outgoing())
    finally:
        await slow.close()


@pytest.mark.parametrize(("max_connections", "most_opened"), [(64, 64), (16, 16)])
async def test_sends_in_flight_keep_their_connections_open(
    fake_resend: FakeResend, monkeypatch: pytest.MonkeyPatch, max_connections: int, most_opened: int
) -> None:
    opened = 0
    lock = threading.Lock()
    setup = FakeHandler.setup

    def counting_setup(handler: FakeHandler) -> None:
        nonlocal opened
        with lock:
            opened += 1
        setup(handler)

    monkeypatch.setattr(FakeHandler, "setup", counting_setup)
    fake_resend.state.latency_s = 0.05  # the 64 sends of a round are in flight together
    pooled = ResendSender(
        SecretStr("re_test_key"), fake_resend.url, timeout_s=5.0, max_connections=max_connections
    )
    try:
        for round_ in range(3):
            await asyncio.gather(*(pooled.send(outgoing(f"job-{round_}-{i}")) for i in range(64)))
    finally:
        await pooled.close()
    assert len(fake_resend.deliveries) == 3 * 64
    # Every connection stays open: httpx's default pool keeps 20 idle and would reopen 44 a round.
    assert opened <= most_opened


def test_the_pool_has_at_least_one_connection() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        ResendSender(SecretStr("re_test_key"), "http://127.0.0.1:9", timeout_s=1.0, max_connections=0)


async def test_outbox_writes_a_mime_email_and_an_html_file(tmp_path: Path) -> None:
    outbox = OutboxSender(tmp_path)
    assert await outbox.send(outgoing("job/4")) == "outbox:job/4"
    assert await outbox.send(outgoing("job/4")) == "outbox:job/4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job_4.eml", "job_4.html"]
    parsed = email.message_from_bytes((tmp_path / "job_4.eml").read_bytes(), policy=email.policy.default)
    assert parsed["To"] == "ada@example.com"
    assert parsed["Subject"] == "Your code"
    text_part = parsed.get_body(preferencelist=("plain",))
    html_part = parsed.get_body(preferencelist=("html",))
    assert text_part is not None
    assert html_part is not None
    assert "123456" in text_part.get_content()
    assert "<p>code 123456</p>" in html_part.get_content()
    assert (tmp_path / "job_4.html").read_text() == CONTENT.html


class Calls:
    def __init__(self) -> None:
        self.heard: list[tuple[str, str]] = []

    def call_finished(self, operation: str, duration_s: float, outcome: str) -> None:
        assert duration_s >= 0
        self.heard.append((operation, outcome))


async def test_the_observer_hears_each_call_and_how_it_ended(fake_resend: FakeResend) -> None:
    calls = Calls()
    observed = ResendSender(SecretStr("re_test_key"), fake_resend.url, timeout_s=2.0, observer=calls)
    try:
        await observed.send(outgoing("job-ok"))
        fake_resend.script("job-down", Reply(500))
        with pytest.raises(TransientError):
            await observed.send(outgoing("job-down"))
        fake_resend.script("job-bad", Reply(422, error_name="validation_error"))
        with pytest.raises(PermanentError):
            await observed.send(outgoing("job-bad"))
    finally:
        await observed.close()
    assert calls.heard == [("send", "ok"), ("send", "transient"), ("send", "permanent")]
