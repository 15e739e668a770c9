"""Ad jobs end to end: idempotency check, claim, generation, and the job's one final status.

Model calls cost money, so a job is generated at most once per run:

- a job ends in one final status (`processors.ads.store.TERMINAL`): `succeeded`;
  `failed`, a verdict on the job (`PermanentError`: refusal, copy out of bounds after the
  repair round, no model configured; or its attempts used up by the model's transient
  errors); or `dead-lettered`, sent to the dead-letter topic for any other reason (an
  unexpected error, a store that stayed down). `terminal_status` decides which, and
  `conclude` is where the stream layer's dead-letter hook records it;
- a redelivered finished job makes no model call: a success is published again; a
  failure is raised again (`StoredFailure`, a `PermanentError` with the stored class,
  message and reason), so that its failed result and dead letter are written again,
  and nothing is lost if a crash came between the two;
- a paid answer that could not be stored (the store failed right after the model
  answered) is kept in memory, and the job's retry in this process stores it instead of
  calling the model again (`UNSTORED_ANSWERS` of them at most);
- only a replay runs a finished job again: `process(job, replay=mark)` with the replayed
  record's mark is a new run, with its own claims.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from processors.ads.generator import AdCopyGenerator, GeneratedCopy, spent
from processors.ads.jobs import AdJob, AdResult, AdVariant, DocumentRef
from processors.ads.store import STAGE_MODEL, TERMINAL, AdStore, Status
from processors.cancellation import release_on_cancel
from processors.claims import ClaimOutcome
from processors.errors import JobError, PermanentError, TransientError
from processors.store import Document, aware

ATTEMPTS_EXHAUSTED = "attempts-exhausted"
UNSTORED_ANSWERS = 1_000
"""Paid model outcomes kept in memory until they are stored (see `AdService._outcome`)."""


class StoredFailure(PermanentError):
    """A finished job's failure, raised again for a redelivery: no model call is made."""

    def __init__(self, message: str, *, error_class: str, reason: str, state: str) -> None:
        super().__init__(message, error_class=error_class)
        self.reason = reason
        self.state = state


def terminal_status(error: JobError, reason: str, *, model_failed: bool) -> Status:
    """The final status of a job dead-lettered with `reason` after `error`.

    `failed` for a verdict on the job: a permanent error, or attempts used up while the
    last one failed at the model (`model_failed`); `dead-lettered` for anything else.
    """
    if reason == PermanentError.reason and isinstance(error, PermanentError):
        return Status.FAILED
    if reason == ATTEMPTS_EXHAUSTED and model_failed:
        return Status.FAILED
    return Status.DEAD_LETTERED


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
        # A run's model outcome (copy, or a verdict) that is paid for and not stored yet,
        # by (job_id, replay): a retry after a store failure reuses it.
        self._unstored: OrderedDict[tuple[str, str | None], GeneratedCopy | PermanentError] = OrderedDict()

    @property
    def _model(self) -> str | None:
        return self._generator.model if self._generator is not None else None

    async def process(self, job: AdJob, *, replay: str | None = None) -> AdResult:
        """Generate and store copy for `job`; the result to publish on `ad-results`.

        `replay` is the replayed record's mark (`x-replayed-from`), None for any other
        delivery. Raises `TransientError` to be retried later, `PermanentError` to
        dead-letter (then call `conclude` for the result to publish).
        """
        claim = await self._store.claim(job, now=datetime.now(UTC), lease_s=self._lease_s, replay=replay)
        if claim.outcome is ClaimOutcome.ALREADY_DONE:
            return await self._answer(job, claim.document)
        if self._generator is None:
            error = PermanentError("no model configured", error_class="NoModelConfigured")
            await self._store.mark_failed(job.job_id, error.message, error.error_class, replay=replay)
            raise error
        try:
            generated = await self._outcome(job, replay)
        except PermanentError as error:
            usage, calls = spent(error)
            await self._store.mark_failed(
                job.job_id,
                error.message,
                error.error_class,
                dead_letter_reason=error.reason,
                replay=replay,
                model=self._generator.model,
                token_usage=usage,
                model_calls=calls,
            )
            self._unstored.pop((job.job_id, replay), None)
            raise
        except TransientError as error:
            usage, calls = spent(error)
            await self._store.mark_retrying(
                job.job_id,
                error.message,
                error.error_class,
                replay=replay,
                stage=STAGE_MODEL,
                token_usage=usage,
                model_calls=calls,
            )
            raise
        except Exception as error:
            # A bug, not a verdict on the job: release the claim so the retry can take it
            # at once instead of waiting out the lease.
            await self._store.mark_retrying(
                job.job_id, f"unexpected {type(error).__name__}", "UnexpectedError", replay=replay
            )
            raise
        except asyncio.CancelledError:
            # Shutdown or a revoked partition: the next owner reads the job again and must
            # be able to claim it at once, not after AD_LEASE_S.
            await release_on_cancel(
                self._store.mark_retrying(
                    job.job_id, "interrupted before the model answered", "Interrupted", replay=replay
                )
            )
            raise
        try:
            document = await self._store.mark_succeeded(job.job_id, generated, replay=replay)
        except TransientError:
            # The copy is paid for and kept in `_unstored`: free the claim if the store lets
            # us, so that the retry stores it at once instead of waiting out the lease.
            with contextlib.suppress(TransientError):
                await self._store.mark_retrying(
                    job.job_id, "the copy could not be stored", "StoreFailed", replay=replay
                )
            raise
        self._unstored.pop((job.job_id, replay), None)
        return result_from_document(document)

    async def _outcome(self, job: AdJob, replay: str | None) -> GeneratedCopy:
        """The model's copy for this run: an outcome already paid for and not yet stored
        (raised again if it was a verdict), else a new model call's, kept until stored."""
        assert self._generator is not None
        key = (job.job_id, replay)
        kept = self._unstored.get(key)
        if isinstance(kept, PermanentError):
            raise kept
        if kept is not None:
            return kept
        try:
            generated = await self._generator.generate(job)
        except PermanentError as error:
            self._keep(key, error)
            raise
        self._keep(key, generated)
        return generated

    def _keep(self, key: tuple[str, str | None], outcome: GeneratedCopy | PermanentError) -> None:
        self._unstored[key] = outcome
        self._unstored.move_to_end(key)
        while len(self._unstored) > UNSTORED_ANSWERS:
            self._unstored.popitem(last=False)

    async def conclude(
        self, job: AdJob, error: JobError, reason: str, *, replay: str | None = None
    ) -> AdResult:
        """Record that the job's run ends dead-lettered with `reason` after `error`, in its
        final status (`terminal_status`), unless it has one already; the result to publish.

        Idempotent: the stream layer calls it before it writes the dead letter, and again
        if the record is read again.
        """
        if isinstance(error, StoredFailure):
            return failed_result(job, error)
        run = await self._store.run(job.job_id, replay=replay)
        if run is not None and run.get("status") in TERMINAL:
            return result_from_document(run)
        model_failed = (
            run is not None
            and run.get("status") == Status.RETRYING.value
            and run.get("stage") == STAGE_MODEL
            and run.get("error_class") == error.error_class
        )
        status = terminal_status(error, reason, model_failed=model_failed)
        document = await self._store.mark_failed(
            job.job_id,
            error.message,
            error.error_class,
            status=status,
            dead_letter_reason=reason,
            replay=replay,
            model=self._model if model_failed else None,
            job=job,
        )
        return result_from_document(document)

    async def _answer(self, job: AdJob, run: Document) -> AdResult:
        """The result of a finished run; a failure is raised again, unless a later run succeeded."""
        if run.get("status") == Status.SUCCEEDED.value:
            return result_from_document(run)
        stored = await self._store.stored(job.job_id)
        latest = stored if stored is not None and stored.get("status") in TERMINAL else run
        if latest.get("status") == Status.SUCCEEDED.value:
            return result_from_document(latest)
        raise StoredFailure(
            str(latest.get("error") or "failed"),
            error_class=str(latest.get("error_class") or "Failed"),
            reason=str(latest.get("reason") or PermanentError.reason),
            state=str(latest.get("status") or Status.FAILED.value),
        )


def failed_result(job: AdJob, error: JobError, *, state: str | None = None) -> AdResult:
    """The `ad-results` message for a job that failed for good."""
    if state is None:
        state = error.state if isinstance(error, StoredFailure) else Status.FAILED.value
    return AdResult(
        job_id=job.job_id,
        user_id=job.user_id,
        status="failed",
        state=state,
        error=error.message,
        error_class=error.error_class,
        document=DocumentRef(id=job.job_id),
        platform=job.platform,
        product_name=job.product.name,
        notify=job.notify,
        completed_at=datetime.now(UTC),
    )


def result_from_document(document: dict[str, Any]) -> AdResult:
    """The `ad-results` message for a finished job: its `ads` document (its latest run),
    or the claims document of one of its runs."""
    request = AdJob.model_validate(document["request"])
    state = str(document.get("status") or Status.SUCCEEDED.value)
    succeeded = state == Status.SUCCEEDED.value
    return AdResult(
        job_id=request.job_id,
        user_id=document.get("user_id") or request.user_id,
        status="succeeded" if succeeded else "failed",
        state=state if state in TERMINAL else None,
        variants=[AdVariant.model_validate(v) for v in document["variants"]] if succeeded else None,
        error=None if succeeded else document.get("error"),
        error_class=None if succeeded else document.get("error_class"),
        document=DocumentRef(id=request.job_id),
        model=document.get("model"),
        platform=request.platform,
        product_name=request.product.name,
        notify=request.notify,
        completed_at=aware(document["completed_at"]),
    )
