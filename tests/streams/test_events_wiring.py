"""`email-events` wiring with FastStream's in-memory TestKafkaBroker: the webhook's publisher and the
worker's own reader (event log and suppression list replaced by recorders)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from processors.email.events import DeliveryEvent, EventKind
from processors.email.suppressions import SuppressionReason
from processors.errors import TransientError
from streams.events import build_events_router
from streams.settings import KafkaSettings, Settings
from streams.topics import TopicNames
from tests.polling import eventually

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class RecordingLog:
    def __init__(self) -> None:
        self.recorded: list[DeliveryEvent] = []
        self.fail_times = 0

    async def record(self, event: DeliveryEvent, now: datetime) -> bool:
        if self.fail_times:
            self.fail_times -= 1
            raise TransientError("store unavailable", error_class="StoreUnavailable")
        new = event.event_id not in {e.event_id for e in self.recorded}
        self.recorded.append(event)
        return new


class RecordingSuppressions:
    def __init__(self) -> None:
        self.added: list[tuple[str, str, str]] = []

    async def add(self, address: str, *, reason: SuppressionReason | str, source: str, now: datetime) -> bool:
        if "@" not in address:
            raise ValueError("not an email address")
        self.added.append((address, str(reason), source))
        return True


def event(event_id: str, kind: EventKind, bounce_type: str | None = None, **extra: Any) -> DeliveryEvent:
    return DeliveryEvent(
        event_id=event_id,
        kind=kind,
        resend_type=f"email.{kind.value}",
        email_id="email-1",
        recipients=("ada@example.com", "bob@example.com"),
        occurred_at=NOW,
        received_at=NOW,
        bounce_type=bounce_type,
        **extra,
    )


def build(
    prefix: str = "",
) -> tuple[KafkaBroker, Any, RecordingLog, RecordingSuppressions, TopicNames]:
    settings = Settings(kafka=KafkaSettings(topic_prefix=prefix, group_id="g"))
    topics = TopicNames.with_prefix(prefix)
    log, suppressions = RecordingLog(), RecordingSuppressions()
    streams = build_events_router(settings, topics, log, suppressions, clock=lambda: NOW)
    broker = KafkaBroker()
    broker.include_router(streams.router)
    return broker, streams, log, suppressions, topics


async def test_published_events_are_recorded_and_hard_bounces_and_complaints_suppress() -> None:
    broker, streams, log, suppressions, topics = build("staging.")
    seen: list[tuple[bytes | None, dict[str, str]]] = []

    @broker.subscriber(topics.email_events, group_id="product")
    async def product(message: KafkaMessage) -> None:
        seen.append((message.raw_message.key, dict(message.headers)))

    async with TestKafkaBroker(broker):
        for e in (
            event("msg_1", EventKind.DELIVERED),
            event("msg_2", EventKind.BOUNCED, "Transient"),
            event("msg_3", EventKind.BOUNCED, "Permanent"),
            event("msg_4", EventKind.COMPLAINED),
        ):
            await streams.publish(e.to_message(), b"email-1")
        await eventually(lambda: len(log.recorded) == 4, timeout_s=5, what="4 events recorded")

    assert [e.event_id for e in log.recorded] == ["msg_1", "msg_2", "msg_3", "msg_4"]
    assert suppressions.added == [
        ("ada@example.com", "bounced", "msg_3"),
        ("bob@example.com", "bounced", "msg_3"),
        ("ada@example.com", "complained", "msg_4"),
        ("bob@example.com", "complained", "msg_4"),
    ]
    key, headers = seen[0]
    assert key == b"email-1"
    assert headers["content-type"] == "application/json"


async def test_a_record_that_is_no_event_is_skipped_and_the_next_is_handled() -> None:
    broker, streams, log, _, topics = build()
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(b"not an event", topic=topics.email_events)
        await test_broker.publish(json.dumps({"kind": "sent"}).encode(), topic=topics.email_events)
        await streams.publish(event("msg_1", EventKind.SENT).to_message(), b"email-1")
        await eventually(lambda: log.recorded, timeout_s=5, what="the valid event recorded")
    assert [e.event_id for e in log.recorded] == ["msg_1"]


async def test_a_store_failure_is_not_skipped() -> None:
    # On a real broker the dispatcher runs it again in place (streams.dispatch); the
    # in-memory broker hands the error back to the publisher.
    broker, streams, log, _, _ = build()
    log.fail_times = 1
    async with TestKafkaBroker(broker):
        with pytest.raises(TransientError):
            await streams.publish(event("msg_1", EventKind.DELIVERED).to_message(), b"email-1")
    assert log.recorded == []


async def test_a_recipient_that_is_no_address_does_not_block_the_others() -> None:
    broker, streams, log, suppressions, _ = build()
    complaint = DeliveryEvent(
        event_id="msg_1",
        kind=EventKind.COMPLAINED,
        resend_type="email.complained",
        email_id="email-1",
        recipients=("undisclosed-recipients", "ada@example.com"),
        occurred_at=NOW,
        received_at=NOW,
    )
    async with TestKafkaBroker(broker):
        await streams.publish(complaint.to_message(), b"email-1")
        await eventually(lambda: log.recorded, timeout_s=5, what="the event recorded")
    assert suppressions.added == [("ada@example.com", "complained", "msg_1")]
