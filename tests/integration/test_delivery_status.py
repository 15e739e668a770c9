"""Resend's delivery events through the worker as users run it: the fake provider posts
Svix-signed webhooks to the worker's HTTP port; a hard bounce suppresses the address for
the jobs that follow, the events reach `email-events` and the job's ledger story."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from processors.email.delivery_events import DeliveryEvents
from processors.email.ledger import DeliveryLedger
from processors.email.status import job_status
from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.fakes.resend_server import FakeResend, new_webhook_secret
from tests.integration.conftest import KAFKA
from tests.integration.kafka_tools import records_in
from tests.polling import eventually


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def job(run_id: str, name: str, kind: str, to: str, **more: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"code": "246810"} if kind == "SEND_OTP" else {"name": "Ada"}
    return {"type": kind, "job_id": f"{run_id}-{name}", "to": to, **fields, **more}


async def publish(publisher: JobPublisher, topic: str, value: dict[str, Any]) -> None:
    await publisher.producer.send_and_wait(topic, json.dumps(value).encode(), key=value["to"].encode())


async def test_a_hard_bounce_suppresses_the_address_and_a_forged_event_is_refused(
    start_worker: Any,
    publisher: JobPublisher,
    topics: TopicNames,
    fake_resend: FakeResend,
    database: Any,
    run_id: str,
) -> None:
    secret, port = new_webhook_secret(), free_port()
    worker = start_worker(RESEND_WEBHOOK_SECRET=secret, HTTP_HOST="127.0.0.1", HTTP_PORT=str(port))
    fake_resend.configure_webhooks(f"http://127.0.0.1:{port}/webhooks/resend", secret)
    fake_resend.bounce_address("gone@example.com")

    # A code to an address that bounces hard, and one to a good address.
    first = job(run_id, "first", "SEND_OTP", "gone@example.com")
    await publish(publisher, topics.email_jobs.main, first)
    await publish(publisher, topics.email_jobs.main, job(run_id, "fine", "SEND_OTP", "ada@example.com"))
    await eventually(
        lambda: any(w.type == "email.bounced" and w.status == 200 for w in fake_resend.webhooks_sent),
        timeout_s=60,
        what="the bounce to be posted and accepted",
    )

    # The job's story holds the bounce, found through Resend's email id.
    ledger = DeliveryLedger(database["email_deliveries"], lease_s=30)
    events = DeliveryEvents(database, retention_days=30)

    async def bounced() -> dict[str, Any] | None:
        status = await job_status(ledger, events, first["job_id"])
        return status if status is not None and status.get("delivery") == "bounced" else None

    status = await eventually(bounced, timeout_s=30, what="the bounce in the job's story")
    assert [e["kind"] for e in status["events"]] == ["sent", "bounced"]
    assert status["events"][1]["bounce_type"] == "Permanent"

    # Later mail to it is dead-lettered as suppressed; a code the user asked for still goes.
    welcome = job(run_id, "welcome", "WELCOME_EMAIL", "gone@example.com")
    await publish(publisher, topics.email_bulk.main, welcome)
    asked = job(run_id, "asked", "SEND_OTP", "gone@example.com", transactional_override=True)
    await publish(publisher, topics.email_jobs.main, asked)

    async def suppressed() -> list[Any]:
        found = await records_in(KAFKA, topics.email_bulk.dlq)
        return found if found else []

    [dead] = await eventually(suppressed, timeout_s=60, what="the welcome to be dead-lettered")
    assert dead.reason == "suppressed"
    assert json.loads(dead.record.value)["job_id"] == welcome["job_id"]
    assert "gone@example.com" not in json.dumps(dead.record.headers)
    await eventually(
        lambda: any(d.idempotency_key == asked["job_id"] for d in fake_resend.deliveries),
        timeout_s=60,
        what="the overriding code to be sent",
    )
    assert not any(d.idempotency_key == welcome["job_id"] for d in fake_resend.deliveries)

    # The product reads every event on email-events.
    async def published() -> list[Any]:
        found = await records_in(KAFKA, topics.email_events)
        kinds = sorted(json.loads(r.record.value)["kind"] for r in found)
        # The two codes to the bouncing address bounced; ada's was delivered.
        return kinds if kinds.count("bounced") >= 2 and "delivered" in kinds else []

    kinds = await eventually(published, timeout_s=30, what="the events on email-events")
    assert kinds.count("bounced") == 2
    assert kinds.count("sent") == 3

    # A forged event (wrong secret) is refused and changes nothing.
    data = {"email_id": "e-forged", "to": ["ada@example.com"], "from": "x", "subject": "Hi"}
    forged = await asyncio.to_thread(fake_resend.send_forged_event, "email.complained", data)
    assert forged.status == 401
    await publish(publisher, topics.email_jobs.main, job(run_id, "after", "SEND_OTP", "ada@example.com"))
    await eventually(
        lambda: any(d.idempotency_key == f"{run_id}-after" for d in fake_resend.deliveries),
        timeout_s=60,
        what="ada's next code to be sent",
    )
    assert "246810" not in worker.log()
    assert secret not in worker.log()
    await ledger.aclose()
    await events.aclose()
