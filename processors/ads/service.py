"""Ad jobs end to end: idempotency check, claim, generation, storing the outcome.

A job that already succeeded is answered from the store without calling the model:
model calls cost money, so a redelivered job is re-published, not regenerated.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from processors.ads.generator import AdCopyGenerator
from processors.ads.jobs import AdJob, AdResult, AdVariant, DocumentRef
from processors.ads.store import AdStore
from processors.cancellation import release_on_cancel
from processors.claims import ClaimOutcome
from processors.errors import JobError, PermanentError, TransientError
from processors.store import aware


class AdService:
    def __init__(self, store: AdStore, generator: AdCopyGenerator | None, lease_s: float) -> None:
        if generator is not None and lease_s <= generator.max_duration_s:
            # A shorter lease lets a second worker claim the job while the first still waits on the model.
            raise ValueError(
                f"lease_s ({lease_s}) must be longer than the generator's worst case "
                f"({generator.max_duration_s} s)"
            )
        self._store = store
        self._generator = generator
        self._lease_s = lease_s

    async def process(self, job: AdJob) -> AdResult:
        """Generate and store copy for `job`; the result to publish on `ad-results`.

        Raises `TransientError` to be retried later, `PermanentError` to dead-letter
        (publish `failed_result` for it).
        """
        claim = await self._store.claim(job, now=datetime.now(UTC), lease_s=self._lease_s)
        if claim.outcome is ClaimOutcome.ALREADY_DONE:
            return result_from_document(claim.document)
        if self._generator is None:
            error = PermanentError("no model configured", error_class="NoModelConfigured")
            await self._store.mark_failed(job.job_id, error.message, "NoModelConfigured")
            raise error
        try:
            generated = await self._generator.generate(job)
        except PermanentError as error:
            await self._store.mark_failed(job.job_id, error.message, error.error_class)
            raise
        except TransientError as error:
            await self._store.mark_retrying(job.job_id, error.message, error.error_class)
            raise
        except Exception as error:
            # A bug, not a verdict on the job: release the claim so the retry can take it
            # at once instead of waiting out the lease.
            await self._store.mark_retrying(
                job.job_id, f"unexpected {type(error).__name__}", "UnexpectedError"
            )
            raise
        except asyncio.CancelledError:
            # Shutdown or a revoked partition: the next owner reads the job again and must
            # be able to claim it at once, not after AD_LEASE_S.
            await release_on_cancel(
                self._store.mark_retrying(job.job_id, "interrupted before the model answered", "Interrupted")
            )
            raise
        return result_from_document(await self._store.mark_succeeded(job.job_id, generated))


def failed_result(job: AdJob, error: JobError) -> AdResult:
    """The `ad-results` message for a job that failed for good."""
    return AdResult(
        job_id=job.job_id,
        user_id=job.user_id,
        status="failed",
        error=error.message,
        error_class=error.error_class,
        document=DocumentRef(id=job.job_id),
        platform=job.platform,
        product_name=job.product.name,
        notify=job.notify,
        completed_at=datetime.now(UTC),
    )


def result_from_document(document: dict[str, Any]) -> AdResult:
    """The `ad-results` message for a stored `succeeded` job."""
    request = AdJob.model_validate(document["request"])
    return AdResult(
        job_id=document["job_id"],
        user_id=document["user_id"],
        status="succeeded",
        variants=[AdVariant.model_validate(variant) for variant in document["variants"]],
        document=DocumentRef(id=document["job_id"]),
        model=document.get("model"),
        platform=request.platform,
        product_name=request.product.name,
        notify=request.notify,
        completed_at=aware(document["completed_at"]),
    )
