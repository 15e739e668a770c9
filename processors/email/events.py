"""Resend's delivery events (its webhooks), and the message the worker publishes for each.

Resend posts one JSON document per event, signed with Svix (`streams.webhooks` checks the
signature before anything here reads it):

    {"type": "email.bounced", "created_at": "2026-03-01T12:00:00.000Z",
     "data": {"email_id": "4ef9...", "to": ["ada@example.com"], "from": "Acme <no-reply@...>",
              "subject": "...", "created_at": "...", "tags": {"k": "v"},
              "bounce": {"type": "Permanent", "subType": "General", "message": "..."}}}

The `svix-id` header names the event, and Resend sends the same id again when it
retries: it is the event's id here (`event_id`), the key to deduplicate by.

Reading is tolerant: an event type this module does not name is kept as `other` with
Resend's own type string, and fields it does not know are ignored. Only a document that
is not a JSON object with a string `type` is refused (`PoisonMessage`).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from processors.decoding import describe_validation_error
from processors.errors import PoisonMessage


class EventKind(enum.StrEnum):
    SENT = "sent"
    SCHEDULED = "scheduled"
    DELIVERED = "delivered"
    DELIVERY_DELAYED = "delivery_delayed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    OTHER = "other"
    """Any other type (inbound email, contacts, domains, a type Resend adds later)."""


_KINDS = {f"email.{kind.value}": kind for kind in EventKind if kind is not EventKind.OTHER}

PERMANENT_BOUNCE = "permanent"


@dataclass(frozen=True)
class DeliveryEvent:
    """One event about one email Resend sent (or another Resend event, as `other`)."""

    event_id: str
    kind: EventKind
    resend_type: str
    email_id: str | None
    recipients: tuple[str, ...]
    occurred_at: datetime
    received_at: datetime
    bounce_type: str | None = None
    bounce_subtype: str | None = None
    bounce_message: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def suppresses(self) -> bool:
        """Whether the recipients must get no more email: a hard bounce, or a complaint."""
        if self.kind is EventKind.COMPLAINED:
            return True
        return self.kind is EventKind.BOUNCED and (self.bounce_type or "").lower() == PERMANENT_BOUNCE

    def to_model(self) -> EmailEventMessage:
        return EmailEventMessage(
            event_id=self.event_id,
            kind=self.kind,
            resend_type=self.resend_type,
            email_id=self.email_id,
            recipients=list(self.recipients),
            occurred_at=self.occurred_at,
            received_at=self.received_at,
            bounce_type=self.bounce_type,
            bounce_subtype=self.bounce_subtype,
            bounce_message=self.bounce_message,
            tags=dict(self.tags),
            suppresses=self.suppresses,
        )

    def to_message(self) -> bytes:
        """The event as published on `email-events` (`EmailEventMessage`, JSON)."""
        return self.to_model().model_dump_json().encode()

    @classmethod
    def from_model(cls, message: EmailEventMessage) -> DeliveryEvent:
        return cls(
            event_id=message.event_id,
            kind=message.kind,
            resend_type=message.resend_type,
            email_id=message.email_id,
            recipients=tuple(message.recipients),
            occurred_at=message.occurred_at,
            received_at=message.received_at,
            bounce_type=message.bounce_type,
            bounce_subtype=message.bounce_subtype,
            bounce_message=message.bounce_message,
            tags=tuple(sorted(message.tags.items())),
        )

    @classmethod
    def from_message(cls, raw: bytes) -> DeliveryEvent:
        """Read an `email-events` message; `PoisonMessage` if it is not one."""
        return cls.from_model(read_message(raw))


def read_message(raw: bytes) -> EmailEventMessage:
    """An `email-events` message, validated; `PoisonMessage` if it is not one."""
    try:
        return EmailEventMessage.model_validate_json(raw)
    except ValidationError as error:
        raise PoisonMessage("schema", describe_validation_error(error)) from None


def parse_webhook(body: bytes | str, *, event_id: str, received_at: datetime) -> DeliveryEvent:
    """The event in a verified Resend webhook body; `event_id` is its `svix-id` header.

    Raises `PoisonMessage` when the body is not a JSON object with a string `type`.
    `occurred_at` is the event's `created_at`, else the email's, else `received_at`.
    """
    try:
        payload: Any = json.loads(body)
    except UnicodeDecodeError:
        raise PoisonMessage("invalid-json", "the event is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise PoisonMessage("invalid-json", f"the event is not JSON: {error.msg}") from None
    except (RecursionError, ValueError):
        raise PoisonMessage(
            "invalid-json", "the event is nested too deeply or holds a number too long"
        ) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise PoisonMessage("schema", "a Resend event is a JSON object with a string `type`")
    if not event_id:
        raise PoisonMessage("schema", "the event has no id")
    resend_type: str = payload["type"]
    data = payload.get("data")
    data = data if isinstance(data, dict) else {}
    bounce = data.get("bounce")
    bounce = bounce if isinstance(bounce, dict) else {}
    email_id = data.get("email_id")
    return DeliveryEvent(
        event_id=event_id,
        kind=_KINDS.get(resend_type, EventKind.OTHER),
        resend_type=resend_type,
        email_id=email_id if isinstance(email_id, str) and email_id else None,
        recipients=_recipients(data.get("to")),
        occurred_at=_timestamp(payload.get("created_at"))
        or _timestamp(data.get("created_at"))
        or received_at,
        received_at=received_at,
        bounce_type=_text(bounce.get("type")),
        bounce_subtype=_text(bounce.get("subType")),
        bounce_message=_text(bounce.get("message")),
        tags=_tags(data.get("tags")),
    )


def _recipients(value: Any) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return tuple(item for item in values if isinstance(item, str) and item)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _tags(value: Any) -> tuple[tuple[str, str], ...]:
    """Tags as Resend sends them today (`{"name": "value"}`) or did before (`[{"name", "value"}]`)."""
    pairs: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = [(tag.get("name"), tag.get("value")) for tag in value if isinstance(tag, dict)]
    return tuple(sorted((k, v) for k, v in pairs if isinstance(k, str) and isinstance(v, str)))


class EmailEventMessage(BaseModel):
    """What happened to an email after Resend accepted it: one message per Resend event."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: str = Field(
        min_length=1,
        description=(
            "The event's id (Resend's `svix-id`). Delivery is at-least-once: the same event "
            "can be published more than once, so deduplicate by this id."
        ),
        examples=["msg_2zKqFvY1aBcDeFgHiJkLmNoP"],
    )
    kind: EventKind = Field(
        description=(
            "What happened: `delivered`, `bounced`, `complained`, `delivery_delayed`, `sent`, "
            "and Resend's other email events by name; `other` for any other Resend event "
            "(see `resend_type`). Treat kinds you don't know as `other`: new ones may be added."
        ),
        examples=["bounced"],
    )
    resend_type: str = Field(description="Resend's own event type, unchanged.", examples=["email.bounced"])
    email_id: str | None = Field(
        default=None,
        description=(
            "Resend's id of the email (also the message key). It is the `provider_message_id` "
            "of the job in the worker's delivery ledger. None for events about no email."
        ),
        examples=["4ef9a417-02e9-4d39-ad75-9611e0fcc33c"],
    )
    recipients: list[str] = Field(
        default_factory=list,
        description="The recipient addresses the event is about.",
        examples=[["ada@example.com"]],
    )
    occurred_at: AwareDatetime = Field(
        description="When Resend says the event happened (its `created_at`).",
        examples=["2026-03-01T12:00:05Z"],
    )
    received_at: AwareDatetime = Field(
        description="When the worker received the event.", examples=["2026-03-01T12:00:06Z"]
    )
    bounce_type: str | None = Field(
        default=None,
        description=(
            "For `bounced`: Resend's bounce type, `Permanent` (a hard bounce) or `Transient` "
            "(`Temporary` in some of Resend's documents)."
        ),
        examples=["Permanent"],
    )
    bounce_subtype: str | None = Field(
        default=None, description="For `bounced`: Resend's bounce sub-type.", examples=["General"]
    )
    bounce_message: str | None = Field(
        default=None,
        description="For `bounced`: the receiving server's explanation; it may quote the address.",
        examples=["The recipient's mail server permanently rejected the email."],
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="The email's tags, as sent to Resend.", examples=[{}]
    )
    suppresses: bool = Field(
        default=False,
        description=(
            "Whether the worker puts the recipients on its suppression list: a hard bounce "
            "(`bounce_type` Permanent) or a complaint. Later email to them is dead-lettered "
            "as `suppressed`."
        ),
    )

    @field_validator("kind", mode="before")
    @classmethod
    def _unknown_kind_is_other(cls, value: Any) -> Any:
        known = {kind.value for kind in EventKind}
        return value if value in known or isinstance(value, EventKind) else EventKind.OTHER
