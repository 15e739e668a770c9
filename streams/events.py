"""The `email-events` topic: Resend's delivery events, published by the webhook and consumed
here to keep the event log and the suppression list.

`build_events_router` declares both ends on one router: the publisher the webhook
(`streams.webhooks`) publishes through, and a subscriber in a group of its own
(`<group>.events`) that records each event (`DeliveryEvents`) and puts the recipients of
a hard bounce or a complaint on the suppression list. Both are idempotent, so a
redelivered or republished event changes nothing. A record that is not an event is
logged and skipped (the topic has no dead-letter topic); a store failure runs the
record again in place after a growing pause (`streams.dispatch`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol

from faststream import BaseMiddleware
from faststream.kafka import KafkaRouter
from faststream.message import StreamMessage

from processors.email.events import DeliveryEvent, EmailEventMessage, EventKind, read_message
from processors.email.service import mask_email
from processors.email.suppressions import SuppressionReason
from processors.errors import PoisonMessage
from streams.consumed import dispatch_options
from streams.dispatch import dispatched_subscriber
from streams.prose import prose
from streams.settings import Settings
from streams.topics import TopicNames

log = logging.getLogger(__name__)

EVENTS_GROUP_SUFFIX = "events"
# Events in flight at once: each is an insert or two, coalesced into bulk inserts.
EVENTS_CONCURRENCY = 64

EMAIL_EVENTS_DESCRIPTION = prose("""What happened to each email after Resend accepted it:
`delivered`, `bounced`, `complained`, `delivery_delayed`, `sent` and Resend's other events, as
Resend reported them to the worker's webhook (`POST /webhooks/resend`, Svix-signed). The key is
Resend's email id (`email_id`, the `provider_message_id` in the delivery ledger), so one email's
events stay in order. Delivery is at-least-once: an event can be published more than once (Resend
retries, the worker restarts), so deduplicate by `event_id`. A hard bounce or a complaint
(`suppresses: true`) puts the recipients on the worker's suppression list.""")

EMAIL_EVENTS_CONSUMER_DESCRIPTION = prose("""The worker's own reader of `email-events` (group
`<KAFKA_GROUP_ID>.events`): it stores each event once by `event_id` (daily buckets, kept
`LEDGER_RETENTION_DAYS`) and adds the recipients of a hard bounce or a complaint to the suppression
list, whose later email jobs are dead-lettered as `suppressed`.""")

Publish = Callable[[bytes, bytes | None], Awaitable[None]]


class EventLog(Protocol):
    async def record(self, event: DeliveryEvent, now: datetime) -> bool: ...


class SuppressionList(Protocol):
    async def add(
        self, address: str, *, reason: SuppressionReason | str, source: str, now: datetime
    ) -> bool: ...


@dataclass(frozen=True)
class EventStreams:
    """What the app wires: include `router` in the broker, give `publish` to the webhook."""

    router: KafkaRouter
    publish: Publish


def build_events_router(
    settings: Settings,
    topics: TopicNames,
    events: EventLog | None,
    suppressions: SuppressionList | None,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> EventStreams:
    """The publisher of `email-events` (for the webhook), and the subscriber that records
    each event in `events` and suppresses addresses in `suppressions` (None: not kept;
    apps built for tests)."""
    router = KafkaRouter()
    router.add_middleware(_SkipNonEvents)
    publisher = router.publisher(
        topics.email_events,
        title=f"{topics.email_events}:publish",
        description=EMAIL_EVENTS_DESCRIPTION,
        schema=EmailEventMessage,
    )

    async def publish(value: bytes, key: bytes | None) -> None:
        await publisher.publish(value, key=key, headers={"content-type": "application/json"})

    async def decode(msg: StreamMessage[Any]) -> EmailEventMessage:
        return read_message(msg.body)

    @dispatched_subscriber(
        router,
        topics.email_events,
        options=dispatch_options(settings, concurrency=EVENTS_CONCURRENCY),
        group_id=f"{settings.kafka.group_id}.{EVENTS_GROUP_SUFFIX}",
        auto_offset_reset="earliest",
        decoder=decode,
        title=f"{topics.email_events}:consume",
        description=EMAIL_EVENTS_CONSUMER_DESCRIPTION,
    )
    async def handle_email_event(message: EmailEventMessage) -> None:
        event = DeliveryEvent.from_model(message)
        now = clock()
        if event.suppresses and suppressions is not None:
            # Before recording: a crash in between leaves the event unrecorded, and its
            # redelivery suppresses again (a no-op) and records it.
            reason = (
                SuppressionReason.COMPLAINED
                if event.kind is EventKind.COMPLAINED
                else SuppressionReason.BOUNCED
            )
            for address in event.recipients:
                try:
                    added = await suppressions.add(address, reason=reason, source=event.event_id, now=now)
                except ValueError:
                    log.warning("event %s names a recipient that is not an address; skipped", event.event_id)
                    continue
                if added:
                    log.info(
                        "suppressed %s: %s (event %s)", mask_email(address), reason.value, event.event_id
                    )
        if events is not None and not await events.record(event, now):
            log.debug("event %s was recorded already", event.event_id)

    return EventStreams(router, publish)


class _SkipNonEvents(BaseMiddleware):
    """A record that is not an event can't be retried into one: log it and go on."""

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        if isinstance(exc_val, PoisonMessage):
            log.warning("skipped an email-events record that is not an event: %s", exc_val.message)
            return True
        return False
