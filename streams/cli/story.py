"""A job's story for operators: its ledger or ads document, every attempt, where it sits now.

The email ledger and the ads store answer what was tried and what came of it; the retry
and dead-letter topics answer where the job is waiting (`streams.cli.sightings`). The
ledger holds no codes; a document is still redacted, in case a field ever does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from processors.ads.store import AdStore
from processors.email.delivery_events import DeliveryEvents
from processors.email.ledger import DeliveryLedger
from processors.email.status import job_status
from processors.store import Document, aware
from streams.cli.context import Context
from streams.cli.redaction import redact
from streams.cli.sightings import Sighting, find_job

LEDGER = "email_deliveries"
ADS = "ads"
IN_PROGRESS = ("sending", "processing")


@dataclass(frozen=True)
class JobStory:
    job_id: str
    kind: Literal["email", "ad"] | None
    document: Document | None
    sightings: list[Sighting]

    @property
    def found(self) -> bool:
        return self.document is not None or bool(self.sightings)

    def attempts(self) -> list[dict[str, Any]]:
        """One entry per attempt: `attempt`, `at`, `outcome` and its `error` (class and message)."""
        return attempts(self.document, self.sightings)

    def as_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "kind": self.kind,
            "document": redact(self.document),
            "attempts": self.attempts(),
            "topics": [sighting.as_json() for sighting in self.sightings],
        }


def attempts(document: Document | None, sightings: list[Sighting]) -> list[dict[str, Any]]:
    if document is None:
        return []
    history = {entry["attempt"]: entry for entry in document.get("history") or []}
    messages = {s.attempts: s.error_message for s in sightings if s.attempts is not None and s.error_message}
    count = int(document.get("attempts") or 0)
    out: list[dict[str, Any]] = []
    for number in range(1, count + 1):
        entry = history.get(number)
        if entry is None:
            working = number == count and document.get("status") in IN_PROGRESS
            out.append(
                {
                    "attempt": number,
                    "at": document.get("lease_until") if working else None,
                    "outcome": "in progress" if working else "no outcome recorded (the worker stopped)",
                    "error": None,
                    "error_message": None,
                }
            )
            continue
        error = entry.get("error") or entry.get("error_class")
        message = messages.get(number)
        if message is None and number == count and document.get("error") != error:
            message = document.get("error")  # the ads store keeps the last failure's reason
        out.append(
            {
                "attempt": number,
                "at": entry.get("at"),
                "outcome": entry.get("outcome"),
                "error": error,
                "error_message": message if error else None,
            }
        )
    return out


async def gather(context: Context, job_id: str) -> JobStory:
    """The job's documents and its records in the retry and dead-letter topics, read together."""
    topics = context.topics.job_topics
    document, sightings = await asyncio.gather(
        _document(context, job_id),
        find_job(
            context.bootstrap,
            job_id=job_id,
            retry_topics=[t.retry for t in topics],
            dlq_topics=[t.dlq for t in topics],
            retry_group=f"{context.settings.kafka.group_id}.retry",
            client_options=context.kafka_options,
        ),
    )
    kind, found = document
    return JobStory(job_id, kind, found, sightings)


async def _document(context: Context, job_id: str) -> tuple[Literal["email", "ad"] | None, Document | None]:
    async with context.store() as database:
        ledger = DeliveryLedger(database[LEDGER], lease_s=context.settings.email.send_lease_s)
        try:
            entry = await job_status(ledger, DeliveryEvents(database), job_id)
        finally:
            await ledger.aclose()
        if entry is not None:
            return "email", entry
        store = AdStore(database[ADS])
        try:
            ad = await store.get(job_id)
        finally:
            await store.aclose()
        return ("ad", ad) if ad is not None else (None, None)


async def recipient_jobs(
    context: Context, to: str, *, since: timedelta, now: datetime
) -> list[dict[str, Any]]:
    """The email jobs to `to` (the whole address, in any case) created at or after `now - since`,
    newest first: `job_id`, `type`, `status`, `attempts`, `last_error`, `sent_at`,
    `delivery` (Resend's latest event), `created_at`. Nothing secret: the ledger holds no codes."""
    wanted = to.strip().lower()
    cutoff = now - since
    async with context.store() as database:
        ledger = DeliveryLedger(database[LEDGER], lease_s=context.settings.email.send_lease_s)
        try:
            entries = await ledger.entries()
        finally:
            await ledger.aclose()
        mine = [
            entry
            for entry in entries
            if str(entry.get("recipient", "")).lower() == wanted and aware(entry["created_at"]) >= cutoff
        ]
        email_ids = [e["provider_message_id"] for e in mine if isinstance(e.get("provider_message_id"), str)]
        events = await DeliveryEvents(database).for_email_ids(email_ids)
    rows = []
    for entry in sorted(mine, key=lambda e: aware(e["created_at"]), reverse=True):
        found = events.get(entry.get("provider_message_id") or "", [])
        rows.append(
            {
                "job_id": entry["job_id"],
                "type": entry.get("type"),
                "status": entry.get("status"),
                "attempts": entry.get("attempts"),
                "last_error": _last_error(entry),
                "sent_at": entry.get("sent_at"),
                "delivery": found[-1]["kind"] if found else None,
                "created_at": entry["created_at"],
            }
        )
    return rows


def _last_error(entry: Document) -> str | None:
    errors = [h.get("error") for h in entry.get("history") or [] if h.get("error")]
    return errors[-1] if errors else entry.get("last_error")
