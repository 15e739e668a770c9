"""A job's whole story for operators: its ledger entry, and what Resend said after.

The delivery events are stored apart, insert-only (`processors.email.delivery_events`),
and joined to the entry here through Resend's email id (`provider_message_id`).
"""

from __future__ import annotations

from typing import Any, Protocol

from processors.email.ledger import DeliveryLedger
from processors.store import Document


class EventsByEmail(Protocol):
    async def for_email_ids(self, email_ids: list[str]) -> dict[str, list[Document]]: ...


async def job_status(ledger: DeliveryLedger, events: EventsByEmail, job_id: str) -> dict[str, Any] | None:
    """The job's ledger entry with `events` (oldest first) and `delivery` (the latest event's
    kind: `delivered`, `bounced`, `complained`, ...) once Resend reported any; None if the
    ledger has no entry."""
    entry = await ledger.get(job_id)
    if entry is None:
        return None
    email_id = entry.get("provider_message_id")
    if isinstance(email_id, str):
        found = (await events.for_email_ids([email_id])).get(email_id, [])
        entry["events"] = found
        if found:
            entry["delivery"] = found[-1]["kind"]
    return entry
