"""Processing one email job: claim it in the ledger, render it, send it, record it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from processors.cancellation import release_on_cancel
from processors.claims import ClaimOutcome
from processors.email.jobs import EmailJobModel
from processors.email.ledger import DeliveryLedger
from processors.email.render import EmailRenderer
from processors.email.senders import EmailSender, OutgoingEmail
from processors.errors import JobError, PermanentError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmailOutcome:
    job_id: str
    provider_message_id: str | None
    already_sent: bool
    attempt: int


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
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._renderer = renderer
        self._sender = sender
        self._ledger = ledger
        self._from = email_from
        self._clock = clock

    async def process(self, job: EmailJobModel) -> EmailOutcome:
        """Send `job` at most once. Raises `TransientError` or `PermanentError` on failure."""
        claim = await self._ledger.claim(
            job_id=job.job_id, email_type=job.type, recipient=str(job.to), now=self._clock()
        )
        if claim.outcome is ClaimOutcome.ALREADY_DONE:
            log.info("email %s already sent, not sending again", job.job_id)
            return EmailOutcome(
                job.job_id,
                claim.document.get("provider_message_id"),
                already_sent=True,
                attempt=claim.attempt,
            )
        try:
            content = self._renderer.render(job)
            provider_id = await self._sender.send(
                OutgoingEmail(idempotency_key=job.job_id, sender=self._from, to=str(job.to), content=content)
            )
        except JobError as error:
            await self._release(
                job, claim.attempt, error.error_class, permanent=isinstance(error, PermanentError)
            )
            raise
        except Exception:
            # A bug, not a verdict on the job: release the claim so the retry can take it
            # at once instead of waiting out the lease.
            await self._release(job, claim.attempt, "UnexpectedError", permanent=False)
            raise
        except asyncio.CancelledError:
            # Cut off by shutdown: let the next owner claim it at once. If the send went
            # through, Resend's Idempotency-Key answers the next attempt without a second email.
            await release_on_cancel(self._release(job, claim.attempt, "Interrupted", permanent=False))
            raise
        await self._ledger.mark_sent(
            job_id=job.job_id,
            attempt=claim.attempt,
            provider=self._sender.name,
            provider_message_id=provider_id,
            now=self._clock(),
        )
        log.info(
            "email %s (%s) sent to %s via %s",
            job.job_id,
            job.type,
            mask_email(str(job.to)),
            self._sender.name,
        )
        return EmailOutcome(job.job_id, provider_id, already_sent=False, attempt=claim.attempt)

    async def _release(self, job: EmailJobModel, attempt: int, error_class: str, *, permanent: bool) -> None:
        await self._ledger.mark_failed(
            job_id=job.job_id,
            attempt=attempt,
            error_class=error_class,
            permanent=permanent,
            now=self._clock(),
        )
