"""The fake Resend, driven by the real SDK: rate limit, batches, idempotency, hangs."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
import resend
import uvicorn
from resend.exceptions import ResendError
from resend.http_client_httpx import HTTPXClient

from processors.email.events import DeliveryEvent, EventKind
from streams.webhooks import PATH as WEBHOOK_PATH
from streams.webhooks import resend_webhook
from tests.fakes.resend_server import (
    BATCH_PATH,
    EMAILS_PATH,
    FakeResend,
    FaultMix,
    Reply,
    new_webhook_secret,
)
from tests.polling import eventually

SENDER = "Acme <no-reply@example.com>"


@pytest.fixture
def sdk(fake_resend: FakeResend, monkeypatch: pytest.MonkeyPatch) -> FakeResend:
    """The SDK's module globals point at the fake (and are restored afterwards)."""
    monkeypatch.setattr(resend, "api_url", fake_resend.url)
    monkeypatch.setattr(resend, "api_key", "re_test")
    monkeypatch.setattr(resend, "default_async_http_client", HTTPXClient(timeout=5))
    return fake_resend


def email(to: str = "ada@example.com", subject: str = "Hello", text: str = "hi") -> resend.Emails.SendParams:
    return {"from": SENDER, "to": [to], "subject": subject, "text": text, "html": f"<p>{text}</p>"}


async def send(params: resend.Emails.SendParams, key: str | None = None) -> Any:
    options: resend.Emails.SendOptions = {"idempotency_key": key} if key else {}
    return await resend.Emails.send_async(params, options)


async def send_batch(
    params: list[resend.Emails.SendParams],
    key: str | None = None,
    mode: Literal["strict", "permissive"] | None = None,
) -> Any:
    options: resend.Batch.SendOptions = {}
    if key:
        options["idempotency_key"] = key
    if mode:
        options["batch_validation"] = mode
    return await resend.Batch.send_async(params, options or None)


# --- rate limit ---


async def test_a_rolling_second_lets_the_limit_through_and_answers_the_rest_429(sdk: FakeResend) -> None:
    # Given a limit of 2 requests per second
    sdk.set_rate_limit(2)

    # When 5 requests arrive at once
    results = await asyncio.gather(
        *(send(email(subject=f"n{i}"), f"rate-{i}") for i in range(5)), return_exceptions=True
    )

    # Then 2 are accepted and 3 are answered 429 with a retry-after of at least a second
    accepted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, ResendError)]
    assert len(accepted) == 2
    assert len(refused) == 3
    for error in refused:
        assert str(error.code) == "429"
        assert error.error_type == "rate_limit_exceeded"
        assert int(error.headers["retry-after"]) >= 1
        assert error.headers["ratelimit-limit"] == "2"
        assert error.headers["ratelimit-remaining"] == "0"
        assert int(error.headers["ratelimit-reset"]) >= 1
    for response in accepted:
        assert response["http_headers"]["ratelimit-limit"] == "2"
    assert sdk.count_by_status() == {200: 2, 429: 3}
    assert sdk.delivery_count == 2

    # And once the window has freed, a request is accepted again
    last_accepted_s = sdk.accepted_arrivals_s()[-1]
    await eventually(lambda: time.time() > last_accepted_s + 1.0, timeout_s=3, what="the window to free")
    await send(email(subject="later"), "rate-later")
    assert sdk.count_by_status() == {200: 3, 429: 3}
    assert len(sdk.accepted_arrivals_s()) == 3
    assert sdk.max_accepted_in_any_window() <= 2


async def test_a_429_stores_nothing_for_its_key(sdk: FakeResend) -> None:
    # Given a limit of 1, used up
    sdk.set_rate_limit(1)
    await send(email(subject="first"), "k-first")

    # When a second key is refused, and retried with the same key once the window frees
    with pytest.raises(ResendError) as caught:
        await send(email(subject="second"), "k-second")
    assert str(caught.value.code) == "429"
    first_s = sdk.accepted_arrivals_s()[0]
    await eventually(lambda: time.time() > first_s + 1.0, timeout_s=3, what="the window to free")
    response = await send(email(subject="second"), "k-second")

    # Then the retry is processed normally: delivered once
    assert [d.email_id for d in sdk.deliveries_by_key()["k-second"]] == [response["id"]]


def test_max_accepted_in_any_window_counts_half_open_windows(fake_resend: FakeResend) -> None:
    fake_resend.state.accepted_arrivals_s.extend([10.0, 10.5, 11.0, 11.2, 11.4, 13.0])
    assert fake_resend.max_accepted_in_any_window() == 4  # [10.5, 11.5)
    assert fake_resend.max_accepted_in_any_window(0.5) == 3  # [11.0, 11.5)
    assert fake_resend.max_accepted_in_any_window(0.4) == 2


# --- batches ---


async def test_a_strict_batch_with_a_bad_entry_delivers_nothing(sdk: FakeResend) -> None:
    # Given a batch whose second entry has an address that is not x@y.z
    batch = [email("ada@example.com"), email("not-an-address"), email("Bob <bob@example.com>")]

    # When it is sent without a validation mode (strict by default)
    with pytest.raises(ResendError) as caught:
        await send_batch(batch, "batch-strict")

    # Then the whole batch is refused, naming the index, and nothing is delivered
    assert str(caught.value.code) == "422"
    assert caught.value.error_type == "validation_error"
    assert "[1]" in caught.value.message
    assert sdk.delivery_count == 0
    [request] = sdk.requests
    assert (request.path, request.emails, request.status) == (BATCH_PATH, 3, 422)


async def test_a_permissive_batch_delivers_the_valid_entries_and_lists_the_errors(sdk: FakeResend) -> None:
    # Given a batch with one malformed address and one the provider refuses
    sdk.reject_address("eve@example.com", "suppressed")
    batch = [
        email("ada@example.com"),
        email("nope@"),
        email("Bob <bob@example.com>"),
        email("Eve <EVE@example.com>"),
    ]

    # When it is sent in permissive mode
    response = await send_batch(batch, "batch-permissive", "permissive")

    # Then the valid entries are delivered, in order, and the others are errors with their index
    deliveries = sdk.deliveries
    assert [d.batch_index for d in deliveries] == [0, 2]
    assert {d.path for d in deliveries} == {BATCH_PATH}
    assert [item["id"] for item in response["data"]] == [d.email_id for d in deliveries]
    assert [error["index"] for error in response["errors"]] == [1, 3]
    assert response["errors"][1]["message"] == "suppressed"
    assert len(sdk.deliveries_by_key()["batch-permissive"]) == 2


async def test_a_strict_batch_has_no_errors_field(sdk: FakeResend) -> None:
    response = await send_batch([email("ada@example.com"), email("bob@example.com")], "batch-ok")
    assert len(response["data"]) == 2
    assert "errors" not in response


@pytest.mark.parametrize("size", [0, 101])
async def test_an_empty_or_oversized_batch_is_refused(sdk: FakeResend, size: int) -> None:
    with pytest.raises(ResendError) as caught:
        await send_batch([email(subject=f"n{i}") for i in range(size)], f"batch-{size}", "permissive")
    assert str(caught.value.code) == "422"
    assert sdk.delivery_count == 0


async def test_a_single_email_to_a_rejected_address_is_refused(sdk: FakeResend) -> None:
    sdk.reject_address("ada@example.com")
    with pytest.raises(ResendError) as caught:
        await send(email("ada@example.com"), "single-rejected")
    assert str(caught.value.code) == "422"
    assert caught.value.error_type == "validation_error"
    assert sdk.delivery_count == 0


# --- idempotency ---


async def test_a_repeated_batch_replays_the_first_answer_and_delivers_nothing_new(sdk: FakeResend) -> None:
    # Given a permissive batch already answered
    batch = [email("ada@example.com"), email("bad"), email("bob@example.com")]
    first = await send_batch(batch, "batch-replay", "permissive")

    # When it is sent again with the same key and payload
    second = await send_batch(batch, "batch-replay", "permissive")

    # Then the answer is the same (ids and errors) and nothing more is delivered
    assert second["data"] == first["data"]
    assert second["errors"] == first["errors"]
    assert sdk.delivery_count == 2
    assert [r.status for r in sdk.requests] == [200, 200]


async def test_a_key_reused_with_another_payload_is_409(sdk: FakeResend) -> None:
    await send_batch([email("ada@example.com")], "batch-409", "permissive")

    # Another list, the same list in another mode, and a single email: all conflict
    for attempt in (
        send_batch([email("bob@example.com")], "batch-409", "permissive"),
        send_batch([email("ada@example.com")], "batch-409", "strict"),
        send(email("ada@example.com"), "batch-409"),
    ):
        with pytest.raises(ResendError) as caught:
            await attempt
        assert str(caught.value.code) == "409"
        assert caught.value.error_type == "invalid_idempotent_request"
    assert sdk.delivery_count == 1


async def test_a_duplicate_across_two_batches_is_found_by_content(sdk: FakeResend) -> None:
    # Given the same email in two batches under different keys
    await send_batch([email("ada@example.com", "Code"), email("bob@example.com", "Code")], "batch-a")
    await send_batch([email("Ada <ADA@example.com>", "Code"), email("eve@example.com", "Code")], "batch-b")

    # Then the idempotency keys see nothing, but the content does
    duplicates = sdk.duplicates_by_content()
    assert list(duplicates.values()) == [2]
    [content_key] = duplicates
    assert "ada@example.com" in content_key


async def test_scripted_replies_and_down_apply_to_batches(sdk: FakeResend) -> None:
    sdk.script("batch-scripted", Reply(503))
    with pytest.raises(ResendError) as caught:
        await send_batch([email()], "batch-scripted")
    assert str(caught.value.code) == "503"
    response = await send_batch([email()], "batch-scripted")
    assert len(response["data"]) == 1

    sdk.set_down(Reply(500))
    with pytest.raises(ResendError):
        await send_batch([email("bob@example.com")], "batch-down")
    assert sdk.delivery_count == 1


# --- hangs ---


async def test_hangs_can_hold_batch_calls_only(sdk: FakeResend) -> None:
    # Given every batch call held 0.2 s, and single sends left alone
    sdk.set_hang_probability(1.0, 0.2, seed=1, only_batches=True)

    # When one of each is sent
    await send(email(subject="single"), "hang-single")
    await send_batch([email(subject="batched")], "hang-batch")

    # Then only the batch was held
    hung = {request.path: request.hung_s for request in sdk.requests}
    assert hung == {EMAILS_PATH: 0.0, BATCH_PATH: 0.2}


async def test_a_hung_batch_holds_its_key_until_decided_then_replays(
    sdk: FakeResend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batch whose first call hangs past the client's timeout
    sdk.hang("batch-hung", 1.0)
    batch = [email("ada@example.com"), email("bob@example.com")]
    monkeypatch.setattr(resend, "default_async_http_client", HTTPXClient(timeout=0.3))  # type: ignore[arg-type]
    with pytest.raises(ResendError) as caught:
        await send_batch(batch, "batch-hung")
    assert caught.value.error_type == "HttpClientError"

    # When the retry arrives while the first call is still in progress, Resend refuses it
    with pytest.raises(ResendError) as conflict:
        await send_batch(batch, "batch-hung")
    assert (str(conflict.value.code), conflict.value.error_type) == ("409", "concurrent_idempotent_requests")

    # Then, once the hung call was decided (it delivered), a retry replays its answer
    await eventually(lambda: sdk.delivery_count == 2, timeout_s=3, what="the hung call's deliveries")
    retry = await send_batch(batch, "batch-hung")
    assert [r.status for r in sdk.requests] == [409, 200, 200]
    assert [r.hung_s for r in sdk.requests] == [0.0, 1.0, 0.0]
    assert [d.email_id for d in sdk.deliveries] == [item["id"] for item in retry["data"]]


async def test_a_late_answer_delivered_at_arrival_and_its_retries_never_send_again(
    sdk: FakeResend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given every request accepted at once but answered only after 0.6 s
    sdk.set_faults(FaultMix(late=1.0, late_s=0.6))
    monkeypatch.setattr(resend, "default_async_http_client", HTTPXClient(timeout=0.2))  # type: ignore[arg-type]

    # When the client times out, the email is already delivered
    with pytest.raises(ResendError) as caught:
        await send(email(subject="late"), "late-1")
    assert caught.value.error_type == "HttpClientError"
    assert sdk.delivery_count == 1

    # And a retry while the answer is still held is refused as concurrent, delivering nothing
    with pytest.raises(ResendError) as conflict:
        await send(email(subject="late"), "late-1")
    assert conflict.value.error_type == "concurrent_idempotent_requests"

    # Then once the answer left, a retry replays it (the fault off: its answer is prompt)
    sdk.set_faults(None)
    await eventually(
        lambda: len(sdk.requests) == 2 and not sdk.state.in_flight, timeout_s=3, what="the answer"
    )
    replayed = await send(email(subject="late"), "late-1")
    assert replayed["id"] == sdk.deliveries[0].email_id
    assert sdk.delivery_count == 1
    assert [r.fault for r in sdk.requests] == ["late", None, None]


def fates(seed: int, keys: list[str]) -> dict[str, tuple[str | None, ...]]:
    """The faults drawn for three requests with each key (keys in this order), from a fresh fake."""
    fake = FakeResend().start()
    try:
        fake.set_faults(FaultMix(server_error=0.2, rate_limited=0.1, late=0.05, late_s=1), seed=seed)
        drawn: dict[str, list[str | None]] = {key: [] for key in keys}
        for _ in range(3):
            for key in keys:
                with fake.state.lock:
                    drawn[key].append(fake._draw_fault(key))
        return {key: tuple(faults) for key, faults in drawn.items()}
    finally:
        fake.stop()


def test_faults_are_drawn_from_the_key_and_the_seed_not_from_arrival_order() -> None:
    keys = [f"job-{i}" for i in range(400)]
    first = fates(7, keys)
    # The same seed gives each key the same fates, in whatever order the keys arrive
    assert fates(7, keys[::-1]) == first
    assert fates(8, keys) != first
    # and roughly the shares asked for
    drawn = [fault for faults in first.values() for fault in faults]
    shares = {name: drawn.count(name) / len(drawn) for name in ("5xx", "429", "late")}
    assert 0.15 < shares["5xx"] < 0.25
    assert 0.06 < shares["429"] < 0.14
    assert 0.02 < shares["late"] < 0.08


async def test_injected_5xx_and_429_deliver_nothing_and_store_nothing(sdk: FakeResend) -> None:
    sdk.set_faults(FaultMix(server_error=0.5, rate_limited=0.5, retry_after_s=2), seed=1)
    with pytest.raises(ResendError) as caught:
        await send(email(subject="faulty"), "faulty-1")
    assert str(caught.value.code) in ("429", "500", "503")
    if str(caught.value.code) == "429":
        assert caught.value.headers is not None
        assert caught.value.headers.get("retry-after") == "2"
    sdk.set_faults(None)
    await send(email(subject="faulty"), "faulty-1")
    assert sdk.delivery_count == 1


async def test_a_key_expires_after_its_ttl_and_sends_again(sdk: FakeResend) -> None:
    sdk.set_idempotency_ttl(0.2)
    first = await send(email(subject="ttl"), "ttl-1")
    assert (await send(email(subject="ttl"), "ttl-1"))["id"] == first["id"]
    await eventually(
        lambda: time.time() - sdk.deliveries[0].at_s > 0.25, timeout_s=2, what="the key to expire"
    )
    again = await send(email(subject="ttl"), "ttl-1")
    assert again["id"] != first["id"]
    assert sdk.delivery_count == 2


@pytest.mark.parametrize("key", ["k" * 257])
async def test_an_overlong_key_is_400_invalid_idempotency_key(sdk: FakeResend, key: str) -> None:
    with pytest.raises(ResendError) as caught:
        await send(email(), key)
    assert (str(caught.value.code), caught.value.error_type) == ("400", "invalid_idempotency_key")
    assert sdk.delivery_count == 0
    await send(email(), "k" * 256)
    assert sdk.delivery_count == 1


# --- webhooks (received by the worker's own endpoint, served by uvicorn in this loop) ---


class Receiver:
    """`streams.webhooks` served on a free port; what it published, as events."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.events: list[DeliveryEvent] = []
        self.fail_next = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}{WEBHOOK_PATH}"
        app = resend_webhook(secret, self._publish)
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))

    async def _publish(self, value: bytes, key: bytes | None) -> None:
        await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("broker down")
        self.events.append(DeliveryEvent.from_message(value))


@pytest.fixture
async def receiver(sdk: FakeResend) -> AsyncIterator[Receiver]:
    received = Receiver(new_webhook_secret())
    serving = asyncio.create_task(received.server.serve(sockets=[received._socket]))
    await eventually(lambda: received.server.started, timeout_s=5, what="the webhook endpoint to start")
    sdk.configure_webhooks(received.url, received.secret)
    yield received
    received.server.should_exit = True
    await serving
    received._socket.close()


def sent_types(fake: FakeResend) -> list[tuple[str, int | None]]:
    return [(sent.type, sent.status) for sent in fake.webhooks_sent]


async def test_an_accepted_email_is_followed_by_signed_sent_and_delivered_events(
    sdk: FakeResend, receiver: Receiver
) -> None:
    response = await send(email("ada@example.com"), "wh-1")

    await eventually(lambda: len(sdk.webhooks_sent) == 2, timeout_s=5, what="2 events answered")
    assert sent_types(sdk) == [("email.sent", 200), ("email.delivered", 200)]
    assert [(e.kind, e.email_id, e.recipients) for e in receiver.events] == [
        (EventKind.SENT, response["id"], ("ada@example.com",)),
        (EventKind.DELIVERED, response["id"], ("ada@example.com",)),
    ]
    # Resend's shape
    payload = sdk.webhooks_sent[1].payload
    assert set(payload) == {"type", "created_at", "data"}
    assert set(payload["data"]) == {"created_at", "email_id", "from", "to", "subject"}
    assert len({sent.event_id for sent in sdk.webhooks_sent}) == 2


async def test_a_bounced_address_gets_a_permanent_bounce(sdk: FakeResend, receiver: Receiver) -> None:
    sdk.bounce_address("Gone@Example.com")
    await send(email("gone@example.com"), "wh-bounce")

    await eventually(lambda: len(sdk.webhooks_sent) == 2, timeout_s=5, what="2 events answered")
    assert sent_types(sdk) == [("email.sent", 200), ("email.bounced", 200)]
    bounce = receiver.events[1]
    assert (bounce.kind, bounce.bounce_type, bounce.bounce_subtype) == (
        EventKind.BOUNCED,
        "Permanent",
        "General",
    )
    assert bounce.suppresses


async def test_a_soft_bounce_can_be_scripted_too(sdk: FakeResend, receiver: Receiver) -> None:
    sdk.bounce_address("full@example.com", "Transient", sub_type="MailboxFull")
    await send(email("full@example.com"), "wh-soft")
    await eventually(lambda: len(sdk.webhooks_sent) == 2, timeout_s=5, what="2 events answered")
    assert not receiver.events[1].suppresses


async def test_a_complaining_address_gets_delivered_then_complained(
    sdk: FakeResend, receiver: Receiver
) -> None:
    sdk.complain_address("grumpy@example.com")
    await send(email("grumpy@example.com"), "wh-complaint")

    await eventually(lambda: len(sdk.webhooks_sent) == 3, timeout_s=5, what="3 events answered")
    assert [e.kind for e in receiver.events] == [EventKind.SENT, EventKind.DELIVERED, EventKind.COMPLAINED]
    assert receiver.events[2].suppresses


async def test_each_email_of_a_batch_gets_its_events(sdk: FakeResend, receiver: Receiver) -> None:
    sdk.bounce_address("gone@example.com")
    result = await send_batch([email("ada@example.com"), email("gone@example.com")], "wh-batch")

    await eventually(lambda: len(sdk.webhooks_sent) == 4, timeout_s=5, what="4 events answered")
    by_email = {(e.email_id, e.kind) for e in receiver.events}
    ada, gone = (item["id"] for item in result["data"])
    assert by_email == {
        (ada, EventKind.SENT),
        (ada, EventKind.DELIVERED),
        (gone, EventKind.SENT),
        (gone, EventKind.BOUNCED),
    }


async def test_webhooks_never_hold_up_the_send(sdk: FakeResend, receiver: Receiver) -> None:
    # Given an endpoint that does not answer until released
    receiver.gate.clear()

    # When an email is sent, the send is answered while its first event is still unanswered
    await send(email("ada@example.com"), "wh-slow")
    assert sdk.webhooks_sent == []

    receiver.gate.set()
    await eventually(lambda: len(sdk.webhooks_sent) == 2, timeout_s=5, what="the events answered")


async def test_an_event_answered_503_is_retried_with_the_same_id(sdk: FakeResend, receiver: Receiver) -> None:
    sdk.configure_webhooks(receiver.url, receiver.secret, retry_delays_s=(0.05,))
    receiver.fail_next = 1
    await send(email("ada@example.com"), "wh-retry")

    await eventually(lambda: len(sdk.webhooks_sent) == 3, timeout_s=5, what="3 posts answered")
    sent = sdk.webhooks_sent
    assert [(s.type, s.status, s.attempt) for s in sent] == [
        ("email.sent", 503, 1),
        ("email.sent", 200, 2),
        ("email.delivered", 200, 1),
    ]
    assert sent[0].event_id == sent[1].event_id


async def test_a_forged_event_is_refused_and_a_replay_is_a_duplicate(
    sdk: FakeResend, receiver: Receiver
) -> None:
    data = {"email_id": "e-1", "to": ["ada@example.com"], "from": SENDER, "subject": "Hi"}

    forged = await asyncio.to_thread(sdk.send_forged_event, "email.complained", data)
    genuine = await asyncio.to_thread(sdk.send_event, "email.delivered", data)
    replayed = await asyncio.to_thread(sdk.replay_event, genuine)

    assert (forged.status, genuine.status, replayed.status) == (401, 200, 200)
    assert replayed.event_id == genuine.event_id
    assert replayed.body == genuine.body
    assert [(e.kind, e.email_id) for e in receiver.events] == [(EventKind.DELIVERED, "e-1")]


def test_no_webhooks_are_sent_until_configured(fake_resend: FakeResend) -> None:
    with pytest.raises(RuntimeError, match="configure_webhooks"):
        fake_resend.send_event("email.delivered", {})
    assert fake_resend.webhooks_sent == []
