"""Processing one email job: claim it in the ledger, render it, send it, record it."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from processors.cancellation import release_on_cancel
from processors.claims import ClaimOutcome
from processors.email.batches import RecordedBatch
from processors.email.deadlines import deadline
from processors.email.jobs import CRITICAL_TYPES, EmailJobModel, SendOtpJob
from processors.email.ledger import DeliveryLedger, Sent, never_sent, pending_batch
from processors.email.outbound import Handoff, Outbound
from processors.email.render import EmailRenderer
from processors.email.senders import EmailSender, OutgoingEmail
from processors.email.supersession import code_key
from processors.errors import Expired, JobError, PermanentError, Suppressed

log = logging.getLogger(__name__)


class CodeHistory(Protocol):
    """Which codes were sent, by recipient and purpose (`processors.email.supersession`)."""

    async def newer_sent(self, key: str, issued_at_ms: int, now: datetime) -> bool: ...

    async def record_sent(self, key: str, issued_at_ms: int, job_id: str, now: datetime) -> None: ...


class SuppressionList(Protocol):
    """Addresses not to send to (`processors.email.suppressions`); answered from memory."""

    async def is_suppressed(self, address: str) -> bool: ...


@dataclass(frozen=True)
class EmailOutcome:
    job_id: str
    provider_message_id: str | None
    already_sent: bool
    attempt: int
    dropped: str | None = None
    """Why the job was dropped without sending (`superseded`), if it was."""


def mask_email(address: str) -> str:
    """`ada@example.com` -> `a***@example.com`, for logs."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


class EmailService:
    def __init__(
        self,
        *,
        renderer: EmailRenderer,
        sender: EmailSender,
        ledger: DeliveryLedger,
        email_from: str,
        outbound: Outbound | None = None,
        codes: CodeHistory | None = None,
        suppressions: SuppressionList | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`outbound` sends within the provider's budget (by default: at once, one by one);
        `codes` drops an older code once a newer one went out; `suppressions` holds back
        email to addresses that bounced hard or complained."""
        self._renderer = renderer
        self._sender = sender
        self._ledger = ledger
        self._outbound = outbound or Outbound(sender)
        self._codes = codes
        self._suppressions = suppressions
        self._from = email_from
        self._clock = clock
        self.counts: Counter[str] = Counter()
        """Jobs by outcome: `sent`, `already-sent`, `expired`, `superseded`, `suppressed`."""

    async def process(self, job: EmailJobModel, *, published_at: datetime | None = None) -> EmailOutcome:
        """Send `job` at most once. Raises `TransientError` or `PermanentError` on failure.

        `published_at` is when the job was first published (its deadline and its place
        among a recipient's codes count from it). An expired job raises `Expired`, one to
        a suppressed address `Suppressed`; an older code than one already sent is dropped.
        """
        job_deadline = deadline(job, published_at)
        try:
            return await self._process(job, published_at, job_deadline)
        except JobError as error:
            if job_deadline is not None:
                error.deadline_ms = int(job_deadline.timestamp() * 1000)
            raise

    async def _process(
        self, job: EmailJobModel, published_at: datetime | None, job_deadline: datetime | None
    ) -> EmailOutcome:
        claim = await self._ledger.claim(
            job_id=job.job_id, email_type=job.type, recipient=str(job.to), now=self._clock()
        )
        if claim.outcome is ClaimOutcome.ALREADY_DONE:
            log.info("email %s already sent, not sending again", job.job_id)
            self.counts["already-sent"] += 1
            return EmailOutcome(
                job.job_id,
                claim.document.get("provider_message_id"),
                already_sent=True,
                attempt=claim.attempt,
            )
        pending = pending_batch(claim.document)
        # Nothing of this job can have gone out yet: it may be held back, or join a batch.
        clean = pending is None and never_sent(claim.document, claim.attempt)
        if clean:
            dropped = await self._hold_back(job, claim.attempt, published_at, job_deadline)
            if dropped is not None:
                return dropped
        handoff = Handoff()
        try:
            # Noted, but not stored: the batch call was never made.
            batch = None if pending is None else await self._ledger.recorded_batch(pending)
            if batch is not None and job.job_id not in batch.members:
                batch = None  # not the batch its note names (never expected)
            if batch is not None:
                handoff.handed = True
                provider_id = await self._repeat_batch(job, batch)
            else:
                content = self._renderer.render(job)
                provider_id = await self._outbound.send(
                    OutgoingEmail(
                        idempotency_key=job.job_id, sender=self._from, to=str(job.to), content=content
                    ),
                    attempt=claim.attempt,
                    # An attempt that may have sent it alone, with its own key, binds the
                    # next ones to that way: only a job never sent may join a batch.
                    batchable=clean,
                    handoff=handoff,
                    urgent=job.type in CRITICAL_TYPES,
                )
        except JobError as error:
            permanent = isinstance(error, PermanentError)
            await self._release(
                job,
                claim.attempt,
                error.error_class,
                permanent=permanent,
                sent=_sent(handoff, clean=clean, refused=permanent),
            )
            raise
        except Exception:
            # A bug, not a verdict on the job: release the claim so the retry can take it
            # at once instead of waiting out the lease.
            await self._release(
                job, claim.attempt, "UnexpectedError", permanent=False, sent=_sent(handoff, clean=clean)
            )
            raise
        except asyncio.CancelledError:
            # Cut off by shutdown: let the next owner claim it at once. If the send went
            # through, Resend's Idempotency-Key answers the next attempt without a second email.
            await release_on_cancel(
                self._release(
                    job, claim.attempt, "Interrupted", permanent=False, sent=_sent(handoff, clean=clean)
                )
            )
            raise
        await self._ledger.mark_sent(
            job_id=job.job_id,
            attempt=claim.attempt,
            provider=self._sender.name,
            provider_message_id=provider_id,
            now=self._clock(),
        )
        if self._codes is not None and isinstance(job, SendOtpJob) and published_at is not None:
            await self._codes.record_sent(
                code_key(str(job.to), job.purpose), _ms(published_at), job.job_id, self._clock()
            )
        self.counts["sent"] += 1
        log.info(
            "email %s (%s) sent to %s via %s",
            job.job_id,
            job.type,
            mask_email(str(job.to)),
            self._sender.name,
        )
        return EmailOutcome(job.job_id, provider_id, already_sent=False, attempt=claim.attempt)

    async def _hold_back(
        self,
        job: EmailJobModel,
        attempt: int,
        published_at: datetime | None,
        job_deadline: datetime | None,
    ) -> EmailOutcome | None:
        """Raise `Expired` or `Suppressed`, or return the outcome of a superseded code; None
        when the job may go out. Only for a job of which nothing went out yet: once it may
        have been sent, its next attempts must repeat that send (the provider's idempotency
        answers them)."""
        now = self._clock()
        if job_deadline is not None and now >= job_deadline:
            self.counts["expired"] += 1
            await self._release(job, attempt, "Expired", permanent=True, sent=Sent.NO)
            late_s = (now - job_deadline).total_seconds()
            raise Expired(f"the {job.type} expired {late_s:.0f} s before it could be sent")
        if (
            self._codes is not None
            and isinstance(job, SendOtpJob)
            and published_at is not None
            and await self._codes.newer_sent(code_key(str(job.to), job.purpose), _ms(published_at), now)
        ):
            self.counts["superseded"] += 1
            await self._release(job, attempt, "Superseded", permanent=True, sent=Sent.NO)
            log.info("email %s (%s) dropped as superseded: a newer code was sent", job.job_id, job.type)
            return EmailOutcome(job.job_id, None, already_sent=False, attempt=attempt, dropped="superseded")
        if (
            self._suppressions is not None
            and not job.transactional_override
            and await self._suppressions.is_suppressed(str(job.to))
        ):
            self.counts["suppressed"] += 1
            await self._release(job, attempt, "Suppressed", permanent=True, sent=Sent.NO)
            raise Suppressed(f"{mask_email(str(job.to))} is on the suppression list (bounced or complained)")
        return None

    async def _repeat_batch(self, job: EmailJobModel, batch: RecordedBatch) -> str:
        """The job joined a batch whose outcome is unknown: make that call again, and
        record the answer for every member, so that theirs are answered from the ledger."""
        log.info("email %s: repeating its batch %s", job.job_id, batch.batch_id)
        result = await self._outbound.repeat(batch)
        now = self._clock()
        others = [
            self._ledger.mark_sent(
                job_id=member,
                attempt=None,
                provider=self._sender.name,
                provider_message_id=outcome,
                now=now,
            )
            for member, outcome in zip(batch.members, result, strict=True)
            if member != job.job_id and isinstance(outcome, str)
        ]
        await asyncio.gather(*others)
        own = result[batch.members.index(job.job_id)]
        if isinstance(own, PermanentError):
            raise own
        return own

    async def _release(
        self,
        job: EmailJobModel,
        attempt: int,
        error_class: str,
        *,
        permanent: bool,
        sent: Sent = Sent.UNKNOWN,
    ) -> None:
        await self._ledger.mark_failed(
            job_id=job.job_id,
            attempt=attempt,
            error_class=error_class,
            permanent=permanent,
            now=self._clock(),
            sent=sent,
        )


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _sent(handoff: Handoff, *, clean: bool, refused: bool = False) -> Sent:
    """Whether a failed attempt leaves the job known never to have been sent.

    Yes when the provider refused this very email (a single send's key, or the batch the
    job is bound to, was answered with a refusal), or when nothing was handed over in this
    attempt and nothing could have gone out before. Otherwise it may have gone out.
    """
    if handoff.handed:
        return Sent.NO if refused else Sent.UNKNOWN
    return Sent.NO if clean else Sent.UNKNOWN
