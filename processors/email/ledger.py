"""The delivery ledger: what happened to each email job, by `job_id`.

It makes sending effectively-once under at-least-once delivery. Before sending, a
worker *claims* the job (`processors.claims`); a job already `sent` is never sent
again, and a job another worker is sending right now (a live lease) is not touched.
Its entries never hold the OTP code or the link's token (a recorded batch does, below).

The entries live in daily buckets, `email_deliveries_<YYYYMMDD>` (the name of the
collection given, plus the day), written with inserts only: a new job costs two inserts
to claim and one to mark, whatever the history, and concurrent jobs share bulk inserts.
A job is recognised for at least a day after its last claim (Resend keeps an
idempotency key as long); buckets older than two days are dropped. Read an entry with
`get(job_id)`, every entry with `entries()`.

**Batches.** Before a batch call, `record_batch` stores the call itself
(`processors.email.batches`, with the rendered emails: the one place the ledger holds a
code, until its bucket is dropped) and notes on each member's attempt which batch it
joined. While a member's batch has no known outcome, `pending_batch` names it, and the
next attempt must repeat that call, never send the job alone or in another batch.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from processors import claims
from processors.buckets import DAY_S
from processors.claims import BatchSettings, Claim, Claims
from processors.email.batches import BatchRecords, RecordedBatch
from processors.store import Document


class Status(enum.StrEnum):
    SENDING = "sending"
    SENT = "sent"
    RETRYING = claims.RETRYING
    FAILED = claims.FAILED


class Sent(enum.StrEnum):
    """What a failed attempt is known to have sent."""

    NO = "no"  # known never to have gone out: refused by the provider, or never handed over
    UNKNOWN = "unknown"  # a timeout, a 5xx, a cut-off after the hand-over: it may have gone out


@dataclass(frozen=True)
class PendingBatch:
    batch_id: str
    at: datetime


def pending_batch(document: Document) -> PendingBatch | None:
    """The batch a job joined whose outcome for it is still unknown, from its document.

    After a job joins a batch, each later attempt repeats that batch, until an attempt is
    released with `sent: no` (the provider answered; this email was refused) or the job
    is done.
    """
    notes = [note for note in document.get("notes") or [] if note.get("batch_id")]
    if not notes:
        return None
    last = max(notes, key=lambda note: note["attempt"])
    settled = any(
        entry.get("sent") == Sent.NO and entry["attempt"] >= last["attempt"]
        for entry in document.get("history") or []
    )
    return None if settled else PendingBatch(last["batch_id"], last["batch_at"])


def never_sent(document: Document, attempt: int) -> bool:
    """Whether every attempt before `attempt` is known to have sent nothing: then the job
    may be sent any way, a batch included. An attempt that may have sent it (a timeout, a
    crash, an older entry that does not say) binds the next ones to its way and key."""
    unsent = {entry["attempt"] for entry in document.get("history") or [] if entry.get("sent") == Sent.NO}
    return all(earlier in unsent for earlier in range(1, attempt))


class DeliveryLedger:
    """`collection` names the buckets (`<its name>_<day>` in its database); it is not written."""

    def __init__(
        self,
        collection: AsyncCollection[dict[str, Any]],
        *,
        lease_s: float,
        bucket_s: int = DAY_S,
        memo_size: int = 10_000,
        batching: BatchSettings | None = None,
    ) -> None:
        self._claims = Claims(
            collection,
            working=Status.SENDING.value,
            done=Status.SENT.value,
            bucket_s=bucket_s,
            memo_size=memo_size,
            batching=batching,
        )
        self._lease_s = lease_s
        self.batches = BatchRecords(collection.database, f"{collection.name}_batches", bucket_s=bucket_s)

    @property
    def claims(self) -> Claims:
        return self._claims

    async def ensure_indexes(self, now: datetime | None = None) -> None:
        """Create today's bucket and drop expired ones (the worker calls it at start)."""
        now = now or datetime.now(UTC)
        await self._claims.prepare(now)
        await self.batches.prepare(now)

    async def get(self, job_id: str) -> dict[str, Any] | None:
        """The job's entry: `status`, `type`, `recipient`, `attempts`, `history`, and once sent
        `provider`, `provider_message_id`, `sent_at`; None if the ledger has none."""
        return await self._claims.get(job_id)

    async def entries(self) -> list[dict[str, Any]]:
        """Every job's entry (operators and tests: it reads every bucket)."""
        return await self._claims.entries()

    async def claim(self, *, job_id: str, email_type: str, recipient: str, now: datetime) -> Claim:
        """Take the right to send `job_id` now, or say it was sent (`ClaimOutcome.ALREADY_DONE`).

        Raises `TransientError` (ClaimHeld) while another worker's lease is live: the
        message must come back later, not be dropped, in case that worker dies.
        """
        return await self._claims.claim(
            job_id,
            now=now,
            lease_s=self._lease_s,
            on_insert={"type": email_type, "recipient": recipient},
        )

    async def record_batch(self, batch: RecordedBatch, *, attempts: dict[str, int]) -> None:
        """Before a batch call: store it, and note on each member's attempt (`attempts`, by
        job id) that it joined it. Raises if any write failed: then do not make the call."""
        notes = (
            self._claims.note(
                job_id,
                attempt=attempts[job_id],
                now=batch.at,
                data={"batch_id": batch.batch_id, "batch_at": batch.at},
            )
            for job_id in batch.members
        )
        await asyncio.gather(self.batches.record(batch), *notes)

    async def recorded_batch(self, pending: PendingBatch) -> RecordedBatch | None:
        return await self.batches.get(pending.batch_id, at=pending.at)

    async def mark_sent(
        self, *, job_id: str, attempt: int | None, provider: str, provider_message_id: str, now: datetime
    ) -> None:
        await self._claims.finish(
            job_id,
            now=now,
            attempt=attempt,
            data={"provider": provider, "provider_message_id": provider_message_id, "sent_at": now},
        )

    async def mark_failed(
        self,
        *,
        job_id: str,
        attempt: int,
        error_class: str,
        permanent: bool,
        now: datetime,
        sent: Sent = Sent.UNKNOWN,
    ) -> None:
        """`sent`: `NO` only when the job is known never to have gone out, by any attempt."""
        status = Status.FAILED if permanent else Status.RETRYING
        await self._claims.release(
            job_id,
            status=status.value,
            now=now,
            attempt=attempt,
            data={"last_error": error_class},
            note={"error": error_class, "sent": sent.value},
        )

    async def aclose(self) -> None:
        """Wait for the bulk writes still running (call before closing the store client)."""
        await self._claims.aclose()
