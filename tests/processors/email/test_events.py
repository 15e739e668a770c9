"""Parsing Resend's webhook events, and the `email-events` message (no store, no broker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from processors.email.events import DeliveryEvent, EmailEventMessage, EventKind, parse_webhook
from processors.errors import PoisonMessage

RECEIVED = datetime(2026, 3, 1, 12, 0, 6, tzinfo=UTC)


def resend_event(event_type: str, **data: Any) -> bytes:
    """A webhook body in Resend's shape (its docs and SDK types)."""
    return json.dumps(
        {
            "type": event_type,
            "created_at": "2026-03-01T12:00:05.123Z",
            "data": {
                "created_at": "2026-03-01T11:59:59.000Z",
                "email_id": "4ef9a417-02e9-4d39-ad75-9611e0fcc33c",
                "from": "Acme <no-reply@example.com>",
                "to": ["ada@example.com"],
                "subject": "Your Acme sign-in code",
                **data,
            },
        }
    ).encode()


def parse(body: bytes, event_id: str = "msg_1") -> DeliveryEvent:
    return parse_webhook(body, event_id=event_id, received_at=RECEIVED)


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [
        ("email.sent", EventKind.SENT),
        ("email.delivered", EventKind.DELIVERED),
        ("email.delivery_delayed", EventKind.DELIVERY_DELAYED),
        ("email.bounced", EventKind.BOUNCED),
        ("email.complained", EventKind.COMPLAINED),
        ("email.opened", EventKind.OPENED),
        ("email.clicked", EventKind.CLICKED),
        ("email.failed", EventKind.FAILED),
        ("email.suppressed", EventKind.SUPPRESSED),
        ("email.scheduled", EventKind.SCHEDULED),
    ],
)
def test_each_resend_email_type_has_its_kind(event_type: str, kind: EventKind) -> None:
    event = parse(resend_event(event_type))
    assert event.kind is kind
    assert event.resend_type == event_type


def test_a_delivered_event_is_read_whole() -> None:
    event = parse(resend_event("email.delivered", tags={"job": "otp-1"}), event_id="msg_abc")
    assert event == DeliveryEvent(
        event_id="msg_abc",
        kind=EventKind.DELIVERED,
        resend_type="email.delivered",
        email_id="4ef9a417-02e9-4d39-ad75-9611e0fcc33c",
        recipients=("ada@example.com",),
        occurred_at=datetime(2026, 3, 1, 12, 0, 5, 123000, tzinfo=UTC),
        received_at=RECEIVED,
        tags=(("job", "otp-1"),),
    )
    assert not event.suppresses


def test_a_bounce_carries_its_type_subtype_and_message() -> None:
    bounce = {"type": "Permanent", "subType": "General", "message": "no such user", "diagnosticCode": "550"}
    event = parse(resend_event("email.bounced", bounce=bounce))
    assert (event.bounce_type, event.bounce_subtype, event.bounce_message) == (
        "Permanent",
        "General",
        "no such user",
    )


@pytest.mark.parametrize(
    ("event_type", "bounce_type", "suppresses"),
    [
        ("email.bounced", "Permanent", True),
        ("email.bounced", "permanent", True),
        ("email.bounced", "Transient", False),
        ("email.bounced", "Temporary", False),
        ("email.bounced", None, False),
        ("email.complained", None, True),
        ("email.delivered", None, False),
        ("email.delivery_delayed", None, False),
        ("email.suppressed", None, False),
    ],
)
def test_only_a_hard_bounce_or_a_complaint_suppresses(
    event_type: str, bounce_type: str | None, suppresses: bool
) -> None:
    extra = {"bounce": {"type": bounce_type, "subType": "General", "message": "x"}} if bounce_type else {}
    assert parse(resend_event(event_type, **extra)).suppresses is suppresses


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"type": "contact.created", "created_at": "2026-03-01T12:00:00Z", "data": {"id": "c1"}}),
        pytest.param({"type": "email.teleported", "data": {"email_id": "e1", "to": "ada@example.com"}}),
        pytest.param({"type": "domain.updated"}, id="no-data"),
        pytest.param({"type": "email.delivered", "data": ["not", "an", "object"]}, id="data-not-object"),
    ],
)
def test_an_unknown_type_or_shape_is_kept_as_other_or_with_what_it_has(body: dict[str, Any]) -> None:
    event = parse(json.dumps(body).encode())
    assert event.resend_type == body["type"]
    assert event.kind in (EventKind.OTHER, EventKind.DELIVERED)
    assert not event.suppresses
    # Published too: it survives the message form.
    assert DeliveryEvent.from_message(event.to_message()) == event


def test_a_type_from_the_future_keeps_its_name_and_recipient() -> None:
    event = parse(
        json.dumps({"type": "email.teleported", "data": {"email_id": "e1", "to": "ada@x.io"}}).encode()
    )
    assert event.kind is EventKind.OTHER
    assert event.email_id == "e1"
    assert event.recipients == ("ada@x.io",)
    assert event.occurred_at == RECEIVED  # no created_at: when it was received


def test_old_style_tags_are_read_too() -> None:
    event = parse(resend_event("email.sent", tags=[{"name": "job", "value": "otp-1"}, {"name": 3}]))
    assert event.tags == (("job", "otp-1"),)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "invalid-json"),
        (b"\xff\xfe", "invalid-json"),
        (b"[1, 2]", "schema"),
        (b'{"data": {}}', "schema"),
        (b'{"type": 7}', "schema"),
    ],
)
def test_a_body_that_is_no_event_is_poison(body: bytes, reason: str) -> None:
    with pytest.raises(PoisonMessage) as raised:
        parse(body)
    assert raised.value.reason == reason


def test_the_message_round_trips_and_says_whether_it_suppresses() -> None:
    event = parse(
        resend_event("email.bounced", bounce={"type": "Permanent", "subType": "General", "message": "x"})
    )
    raw = event.to_message()
    message = json.loads(raw)
    assert message["kind"] == "bounced"
    assert message["suppresses"] is True
    assert message["email_id"] == event.email_id
    assert DeliveryEvent.from_message(raw) == event


def test_a_message_with_a_kind_from_a_newer_worker_reads_as_other() -> None:
    raw = json.loads(parse(resend_event("email.delivered")).to_message())
    raw.update(kind="teleported", a_new_field=1)
    event = DeliveryEvent.from_message(json.dumps(raw).encode())
    assert event.kind is EventKind.OTHER
    assert event.resend_type == "email.delivered"


@pytest.mark.parametrize("raw", [b"{}", b"nope", b'{"event_id": "", "kind": "sent"}'])
def test_a_message_that_is_no_event_is_poison(raw: bytes) -> None:
    with pytest.raises(PoisonMessage):
        DeliveryEvent.from_message(raw)


def test_the_message_model_documents_every_field() -> None:
    schema = EmailEventMessage.model_json_schema()
    undocumented = [name for name, spec in schema["properties"].items() if not spec.get("description")]
    assert undocumented == []
