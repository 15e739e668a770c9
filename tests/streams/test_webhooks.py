"""`POST /webhooks/resend` over httpx's ASGI transport: verified events published once, the rest refused."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from svix.webhooks import Webhook

from processors.email.events import DeliveryEvent, EventKind
from streams.webhooks import PATH, SeenIds, resend_webhook
from tests.fakes.resend_server import new_webhook_secret

SECRET = new_webhook_secret()
EMAIL_ID = "4ef9a417-02e9-4d39-ad75-9611e0fcc33c"


class Published:
    """A `publish` that records what it was given, and can be made to fail."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []
        self.fail_with: Exception | None = None
        self.delay_s = 0.0

    async def __call__(self, value: bytes, key: bytes | None) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        self.records.append((value, key))

    @property
    def events(self) -> list[DeliveryEvent]:
        return [DeliveryEvent.from_message(value) for value, _ in self.records]


class Clock:
    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


def body(event_type: str = "email.delivered", **data: Any) -> bytes:
    return json.dumps(
        {
            "type": event_type,
            "created_at": "2026-03-01T12:00:05.000Z",
            "data": {
                "email_id": EMAIL_ID,
                "to": ["ada@example.com"],
                "from": "Acme <no-reply@example.com>",
                "subject": "Your Acme sign-in code",
                "created_at": "2026-03-01T12:00:00.000Z",
                **data,
            },
        }
    ).encode()


def signed(
    content: bytes, *, event_id: str = "msg_1", secret: str = SECRET, timestamp_s: float | None = None
) -> dict[str, str]:
    at_s = int(time.time() if timestamp_s is None else timestamp_s)
    return {
        "content-type": "application/json",
        "svix-id": event_id,
        "svix-timestamp": str(at_s),
        "svix-signature": Webhook(secret).sign(event_id, datetime.fromtimestamp(at_s, UTC), content.decode()),
    }


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(published: Published, clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    app = resend_webhook(SECRET, published, clock_s=clock, tolerance_s=60, max_body_bytes=4096)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker") as http:
        yield http


async def post(client: httpx.AsyncClient, content: bytes, headers: dict[str, str]) -> httpx.Response:
    return await client.post(PATH, content=content, headers=headers)


async def test_a_verified_event_is_published_keyed_by_email_id(
    client: httpx.AsyncClient, published: Published
) -> None:
    response = await post(client, body(), signed(body(), event_id="msg_abc"))

    assert response.status_code == 200
    assert response.json() == {"status": "published", "event_id": "msg_abc"}
    assert [key for _, key in published.records] == [EMAIL_ID.encode()]
    [event] = published.events
    assert (event.event_id, event.kind, event.email_id, event.recipients) == (
        "msg_abc",
        EventKind.DELIVERED,
        EMAIL_ID,
        ("ada@example.com",),
    )


async def test_a_forged_event_is_refused_401_and_not_published(
    client: httpx.AsyncClient, published: Published
) -> None:
    response = await post(client, body(), signed(body(), secret=new_webhook_secret()))
    assert response.status_code == 401
    assert response.json() == {"error": "invalid signature"}
    assert published.records == []


async def test_a_body_changed_after_signing_is_refused_401(
    client: httpx.AsyncClient, published: Published
) -> None:
    headers = signed(body())
    response = await post(client, body("email.complained"), headers)
    assert response.status_code == 401
    assert published.records == []


@pytest.mark.parametrize(
    "drop", ["svix-id", "svix-timestamp", "svix-signature"], ids=["no-id", "no-timestamp", "no-signature"]
)
async def test_a_missing_signature_header_is_refused_401(
    client: httpx.AsyncClient, published: Published, drop: str
) -> None:
    headers = {k: v for k, v in signed(body()).items() if k != drop}
    response = await post(client, body(), headers)
    assert response.status_code == 401
    assert "missing" in response.json()["error"]
    assert published.records == []


@pytest.mark.parametrize("signature", ["garbage", "v1,", "v1,!!!not-base64", "v2,abc v1"])
async def test_a_malformed_signature_is_refused_401(
    client: httpx.AsyncClient, published: Published, signature: str
) -> None:
    response = await post(client, body(), {**signed(body()), "svix-signature": signature})
    assert response.status_code == 401
    assert published.records == []


@pytest.mark.parametrize("age_s", [61, -61, 3600], ids=["stale", "ahead", "an-hour-old"])
async def test_a_timestamp_outside_the_tolerance_is_refused_400(
    client: httpx.AsyncClient, published: Published, age_s: float
) -> None:
    content = body()
    response = await post(client, content, signed(content, timestamp_s=time.time() - age_s))
    assert response.status_code == 400
    assert "tolerance" in response.json()["error"]
    assert published.records == []


async def test_a_timestamp_that_is_no_number_is_refused_400(client: httpx.AsyncClient) -> None:
    response = await post(client, body(), {**signed(body()), "svix-timestamp": "yesterday"})
    assert response.status_code == 400


async def test_a_replay_is_answered_duplicate_and_published_once(
    client: httpx.AsyncClient, published: Published
) -> None:
    headers = signed(body(), event_id="msg_r")
    first = await post(client, body(), headers)
    again = await post(client, body(), headers)
    # Resend retrying after a lost answer: same id, new timestamp and signature
    retried = await post(client, body(), signed(body(), event_id="msg_r"))

    assert first.json()["status"] == "published"
    assert again.status_code == retried.status_code == 200
    assert again.json() == retried.json() == {"status": "duplicate", "event_id": "msg_r"}
    assert len(published.records) == 1


async def test_concurrent_copies_of_one_event_are_published_once(
    client: httpx.AsyncClient, published: Published
) -> None:
    published.delay_s = 0.05
    headers = signed(body(), event_id="msg_c")
    responses = await asyncio.gather(*(post(client, body(), headers) for _ in range(5)))
    assert sorted(r.json()["status"] for r in responses) == ["duplicate"] * 4 + ["published"]
    assert len(published.records) == 1


async def test_an_event_id_is_forgotten_after_the_tolerance_window(
    client: httpx.AsyncClient, published: Published, clock: Clock
) -> None:
    await post(client, body(), signed(body(), event_id="msg_w"))
    clock.offset_s = 61  # a retry a minute later, signed then
    response = await post(client, body(), signed(body(), event_id="msg_w", timestamp_s=time.time() + 61))
    assert response.json()["status"] == "published"
    assert len(published.records) == 2


def test_the_replay_memory_is_bounded() -> None:
    seen = SeenIds(window_s=300, max_ids=100)
    for i in range(1_000):
        seen.add(f"msg_{i}", now_s=1_000.0 + i * 0.001)
    assert len(seen) == 100
    assert "msg_999" in seen
    assert "msg_0" not in seen
    seen.forget_before(now_s=2_000.0)
    assert len(seen) == 0


async def test_with_no_secret_every_request_is_answered_503(published: Published) -> None:
    app = resend_webhook(None, published)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker") as http:
        response = await http.post(PATH, content=body(), headers=signed(body()))
    assert response.status_code == 503
    assert "RESEND_WEBHOOK_SECRET is unset" in response.json()["error"]
    assert published.records == []


async def test_a_publish_failure_is_answered_503_and_the_retry_is_published(
    client: httpx.AsyncClient, published: Published
) -> None:
    headers = signed(body(), event_id="msg_f")
    published.fail_with = ConnectionError("broker down")
    failed = await post(client, body(), headers)
    published.fail_with = None
    retried = await post(client, body(), headers)

    assert failed.status_code == 503
    assert retried.json()["status"] == "published"
    assert len(published.records) == 1


async def test_a_body_over_the_limit_is_refused_413(client: httpx.AsyncClient, published: Published) -> None:
    content = body(subject="x" * 5_000)
    response = await post(client, content, signed(content))
    assert response.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted as it arrives
        for _ in range(5):
            yield b"x" * 1_000

    streamed = await client.post(PATH, content=chunks(), headers=signed(b"x" * 5_000))
    assert streamed.status_code == 413
    assert published.records == []


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b'{"data": {}}'])
async def test_a_signed_body_that_is_no_event_is_refused_400(
    client: httpx.AsyncClient, published: Published, content: bytes
) -> None:
    response = await post(client, content, signed(content))
    assert response.status_code == 400
    assert published.records == []


async def test_an_unknown_event_type_is_published_as_other(
    client: httpx.AsyncClient, published: Published
) -> None:
    content = json.dumps(
        {"type": "contact.created", "created_at": "2026-03-01T12:00:00Z", "data": {"id": "c"}}
    )
    response = await post(client, content.encode(), signed(content.encode()))
    assert response.json()["status"] == "published"
    assert [(e.kind, e.resend_type, e.email_id) for e in published.events] == [
        (EventKind.OTHER, "contact.created", None)
    ]
    assert published.records[0][1] is None  # no email: no key


async def test_only_post_is_allowed(client: httpx.AsyncClient) -> None:
    response = await client.get(PATH)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


async def test_the_log_says_the_kind_and_a_masked_address_never_the_secret_or_signature(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    content = body("email.bounced", bounce={"type": "Permanent", "subType": "General", "message": "gone"})
    headers = signed(content, event_id="msg_log")
    with caplog.at_level(logging.INFO, logger="streams.webhooks"):
        await post(client, content, headers)
        await post(client, content, {**headers, "svix-signature": "v1,Zm9yZ2Vk"})

    lines = [record.getMessage() for record in caplog.records]
    assert any("msg_log" in line and "bounced" in line and "a***@example.com" in line for line in lines)
    text = "\n".join(lines)
    assert "ada@example.com" not in text
    assert SECRET not in text
    assert headers["svix-signature"] not in text


def test_a_secret_that_is_no_signing_secret_fails_at_once_without_quoting_it() -> None:
    with pytest.raises(ValueError, match="not a signing secret") as raised:
        resend_webhook("whsec_", Published())
    assert "whsec_" not in str(raised.value).replace("(whsec_...)", "")


def test_a_tolerance_wider_than_svix_checks_is_refused() -> None:
    with pytest.raises(ValueError, match="tolerance_s"):
        resend_webhook(SECRET, Published(), tolerance_s=600)
