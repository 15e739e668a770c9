"""Resend's events end to end on the real broker and store, before the app wires them: the fake
Resend posts Svix-signed events to `streams.webhooks` (served by uvicorn), which publishes them on
`email-events`; the events router reads them into the event log and the suppression list."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import resend
import uvicorn
from faststream.kafka import KafkaBroker
from resend.http_client_httpx import HTTPXClient

from processors.email.delivery_events import DeliveryEvents
from processors.email.events import parse_webhook
from processors.email.suppressions import COLLECTION, Suppressions
from streams.admin import ensure_topics
from streams.broker import build_broker
from streams.events import build_events_router
from streams.settings import KafkaSettings, Settings
from streams.topics import TopicNames
from streams.webhooks import PATH, resend_webhook
from tests.fakes.resend_server import FakeResend, new_webhook_secret
from tests.integration.conftest import KAFKA
from tests.polling import eventually

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    broker: KafkaBroker
    events: DeliveryEvents
    suppressions: Suppressions
    publish: Any


@pytest.fixture
async def stack(
    topics: TopicNames, database: Any, run_id: str, fake_resend: FakeResend, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stack]:
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=KAFKA, topic_prefix=f"t{run_id}.", group_id=run_id)
    )
    await ensure_topics(KAFKA, [topics.email_events], partitions=3, replication_factor=1)
    events = DeliveryEvents(database, retention_days=30)
    suppressions = Suppressions(database[COLLECTION], refresh_s=30)
    streams = build_events_router(settings, topics, events, suppressions)
    broker = build_broker(settings.kafka)
    broker.include_router(streams.router)
    await broker.start()

    secret = new_webhook_secret()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}{PATH}"
    server = uvicorn.Server(
        uvicorn.Config(resend_webhook(secret, streams.publish), log_config=None, lifespan="off")
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    await eventually(lambda: server.started, timeout_s=5, what="the webhook endpoint to start")
    fake_resend.configure_webhooks(url, secret)
    monkeypatch.setattr(resend, "api_url", fake_resend.url)
    monkeypatch.setattr(resend, "api_key", "re_test")
    monkeypatch.setattr(resend, "default_async_http_client", HTTPXClient(timeout=5))
    try:
        yield Stack(broker, events, suppressions, streams.publish)
    finally:
        server.should_exit = True
        await serving
        sock.close()
        await broker.stop()
        await events.aclose()


async def send(to: str, key: str) -> str:
    params: resend.Emails.SendParams = {
        "from": "Acme <no-reply@example.com>",
        "to": [to],
        "subject": "Hi",
        "text": "hi",
    }
    response = await resend.Emails.send_async(params, {"idempotency_key": key})
    email_id: str = response["id"]
    return email_id


async def test_a_hard_bounce_suppresses_the_address_and_every_event_is_logged_once(
    stack: Stack, fake_resend: FakeResend
) -> None:
    # Given one address that bounces, one that complains, one that is fine
    fake_resend.bounce_address("gone@example.com")
    fake_resend.complain_address("grumpy@example.com")

    # When an email goes to each
    gone, grumpy, fine = [
        await send(to, f"it-{i}")
        for i, to in enumerate(["gone@example.com", "grumpy@example.com", "ada@example.com"])
    ]

    # Then the endpoint answered every event 200, and the reader logged all seven
    async def logged() -> dict[str, list[dict[str, Any]]]:
        found = await stack.events.for_email_ids([gone, grumpy, fine])
        return found if sum(map(len, found.values())) == 7 else {}

    found = await eventually(logged, timeout_s=30, what="seven events logged")
    assert {sent.status for sent in fake_resend.webhooks_sent} == {200}
    assert [e["kind"] for e in found[gone]] == ["sent", "bounced"]
    assert found[gone][1]["bounce_type"] == "Permanent"
    assert [e["kind"] for e in found[grumpy]] == ["sent", "delivered", "complained"]
    assert [e["kind"] for e in found[fine]] == ["sent", "delivered"]

    # And the bouncing and complaining addresses are suppressed, with the event as source
    entries = {(e.address, e.reason.value) for e in await stack.suppressions.entries()}
    assert entries == {("gone@example.com", "bounced"), ("grumpy@example.com", "complained")}
    assert await stack.suppressions.is_suppressed("Gone@Example.com")
    assert not await stack.suppressions.is_suppressed("ada@example.com")


async def test_a_forged_event_changes_nothing_and_a_replay_is_logged_once(
    stack: Stack, fake_resend: FakeResend
) -> None:
    data = {"email_id": "e-forged", "to": ["victim@example.com"], "from": "x", "subject": "Hi"}
    forged = await asyncio.to_thread(fake_resend.send_forged_event, "email.complained", data)
    genuine = await asyncio.to_thread(
        fake_resend.send_event, "email.delivered", {**data, "email_id": "e-real"}
    )
    replayed = await asyncio.to_thread(fake_resend.replay_event, genuine)
    assert (forged.status, genuine.status, replayed.status) == (401, 200, 200)

    # The same event published again (Resend retrying after a restart of the worker, whose
    # memory of it is gone), then a later event of the same email (the same partition)
    event = parse_webhook(genuine.body, event_id=genuine.event_id, received_at=datetime.now(UTC))
    await stack.publish(event.to_message(), b"e-real")
    later = await asyncio.to_thread(fake_resend.send_event, "email.opened", {**data, "email_id": "e-real"})

    async def both_logged() -> list[str]:
        found = await stack.events.for_email_ids(["e-real"])
        ids = [e["event_id"] for e in found.get("e-real", [])]
        return ids if later.event_id in ids else []

    assert sorted(await eventually(both_logged, timeout_s=30, what="the later event logged")) == sorted(
        [genuine.event_id, later.event_id]
    )
    assert await stack.events.for_email_ids(["e-forged"]) == {}
    assert await stack.suppressions.entries() == []
