"""The processors the handlers call, and the clients behind them, built from settings.

`build_services(settings)` does no I/O: the store client connects on first use. The
app's lifecycle hooks call `start()` (check the store, create indexes) and `close()`.
Tests pass their own `Services` to `create_app`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from processors.ads import AdService, AdStore
from processors.ads.budget import ModelBudget
from processors.ads.jobs import AdJob, AdResult
from processors.ads.prompt import AdPrompt
from processors.email import DeliveryLedger, EmailRenderer, EmailService, OutboxSender, ResendSender
from processors.email.delivery_events import DeliveryEvents
from processors.email.jobs import EmailJobModel
from processors.email.outbound import Outbound
from processors.email.senders import EmailSender
from processors.email.supersession import LatestCodes
from processors.email.suppressions import COLLECTION as SUPPRESSIONS
from processors.email.suppressions import Suppressions
from processors.errors import JobError
from processors.observe import CallObserver, ModelObserver
from processors.retention import Purger
from processors.slots import SlotBudget
from streams.settings import Settings, StoreSettings

if TYPE_CHECKING:
    from processors.ads.generator import AdCopyGenerator

log = logging.getLogger(__name__)


class EmailProcessor(Protocol):
    async def process(self, job: EmailJobModel, *, published_at: datetime | None = None) -> Any: ...


class AdProcessor(Protocol):
    async def process(self, job: AdJob, *, replay: str | None = None) -> AdResult:
        """The result to publish; `replay` is the record's `x-replayed-from` mark, if any."""
        ...

    async def conclude(
        self, job: AdJob, error: JobError, reason: str, *, replay: str | None = None
    ) -> AdResult:
        """Record that the job is dead-lettered with `reason`; the failed result to publish."""
        ...


async def _nothing() -> None:
    return None


@dataclass
class Services:
    email: EmailProcessor
    ads: AdProcessor
    start: Callable[[], Awaitable[None]] = _nothing
    close: Callable[[], Awaitable[None]] = _nothing
    email_partitions: Callable[[Collection[int], int], None] | None = None
    """Told the email partitions this process owns (of how many) at each rebalance: the
    provider's rate budget is shared out by them."""
    delivery_events: DeliveryEvents | None = None
    """Where Resend's delivery events are recorded; None: they are only published."""
    suppressions: Suppressions | None = None
    ping_store: Callable[[], Awaitable[bool]] | None = None
    """True while the store answers (readiness); None: no store to check."""
    budget_waited_s: Callable[[], float] | None = None
    """Total time jobs have waited for the provider's rate budget (metrics)."""
    ad_partitions: Callable[[Collection[int], int], None] | None = None
    """Told the `ad-jobs` partitions this process owns (of how many) at each rebalance:
    the model's budget (OPENAI_RPM, OPENAI_TPM) is shared out by them."""


@dataclass(frozen=True)
class Observers:
    """Who the provider clients tell of their calls (the app's metrics); None: nobody."""

    resend: CallObserver | None = None
    model: ModelObserver | None = None


def build_sender(settings: Settings, observer: CallObserver | None = None) -> EmailSender:
    if settings.resend.api_key is None:
        log.warning(
            "RESEND_API_KEY is not set: emails go to the local outbox %s, not to real inboxes",
            settings.email.outbox_dir.resolve(),
        )
        return OutboxSender(settings.email.outbox_dir)
    log.info("sending email through Resend at %s", settings.resend.api_url)
    return ResendSender(
        settings.resend.api_key,
        settings.resend.api_url,
        settings.resend.timeout_s,
        # One connection per job in flight, or sends queue for a connection.
        max_connections=settings.email.concurrency,
        observer=observer,
    )


LEASE_USED_BY_A_JOB = 0.9
"""With a model budget, one job's calls and waits may take this share of `AD_LEASE_S`."""


def build_model_budget(settings: Settings) -> ModelBudget | None:
    """The model's requests and tokens per minute for the group; None when neither is set."""
    openai = settings.openai
    if not (openai.rpm or openai.tpm):
        return None
    log.info(
        "model budget for the ad consumer group: %s requests and %s tokens a minute",
        openai.rpm or "unlimited",
        openai.tpm or "unlimited",
    )
    return ModelBudget(requests_per_min=openai.rpm, tokens_per_min=openai.tpm)


def build_generator(
    settings: Settings,
    ad_dlq: str,
    observer: ModelObserver | None = None,
    budget: ModelBudget | None = None,
) -> AdCopyGenerator | None:
    openai = settings.openai
    if not openai.model:
        log.warning(
            "OPENAI_MODEL is not set: no model configured, so ad jobs go to %s with reason "
            "'no model configured'; replay them once a model is configured",
            ad_dlq,
        )
        return None
    log.info("writing ad copy with model %s at %s", openai.model, openai.base_url or "OpenAI")
    # Only now: LangChain and the OpenAI SDK cost about 0.8 s and 42 MiB to import.
    from processors.ads.generator import MAX_MODEL_CALLS, AdCopyGenerator, call_worst_case_s

    max_wait_s = None
    if budget is not None:
        # A job may wait for the budget as long as its lease allows, not just one call's
        # time: at a saturated budget all AD_CONCURRENCY jobs of a process queue for it
        # (8 at 10 calls a minute wait 48 s), and a job that stops waiting pays an attempt.
        calls_s = MAX_MODEL_CALLS * call_worst_case_s(openai.timeout_s, openai.max_retries)
        max_wait_s = max(calls_s / MAX_MODEL_CALLS, LEASE_USED_BY_A_JOB * settings.ads.lease_s - calls_s)
    generator = AdCopyGenerator(
        model=openai.model,
        api_key=openai.api_key,
        base_url=openai.base_url,
        timeout_s=openai.timeout_s,
        max_retries=openai.max_retries,
        prompt=AdPrompt(settings.worker.templates_dir),
        observer=observer,
        budget=budget,
        max_wait_s=max_wait_s,
    )
    return generator


def build_store_client(store: StoreSettings) -> AsyncMongoClient[dict[str, Any]]:
    """The store client; it connects on first use.

    Never cancel one of its calls: on Python 3.11 a call cancelled while it selects a
    server can leave the client unusable for good. The processors call it through
    `processors.store.guard_store`, which no cancellation passes; the readiness check
    (`ping_store`) is never cancelled either (`streams.health`).
    """
    return AsyncMongoClient(
        store.url.get_secret_value(),
        serverSelectionTimeoutMS=store.timeout_ms,
        tz_aware=True,
    )


def build_services(settings: Settings, *, ad_dlq: str, observers: Observers = Observers()) -> Services:
    """The real processors: MongoDB-wire store, Resend (or the outbox), the model (if configured)."""
    mongo = build_store_client(settings.store)
    database = mongo[settings.store.database]
    ledger = DeliveryLedger(database["email_deliveries"], lease_s=settings.email.send_lease_s)
    store = AdStore(database["ads"])
    purger = Purger([store.purge], retention=timedelta(days=settings.email.ledger_retention_days))
    model_budget = build_model_budget(settings) if settings.openai.model else None
    generator = build_generator(settings, ad_dlq, observers.model, model_budget)
    try:
        ads = AdService(store, generator, lease_s=settings.ads.lease_s)
    except ValueError as error:
        raise SystemExit(f"invalid configuration: AD_LEASE_S: {error}") from None
    sender = build_sender(settings, observers.resend)
    # The outbox has no rate limit; Resend's is one budget for the group.
    budget = SlotBudget(settings.resend.rate_limit_per_s) if isinstance(sender, ResendSender) else None
    outbound = Outbound(sender, budget=budget, ledger=ledger, max_batch=settings.resend.batch_max)
    codes = LatestCodes(database)
    suppressions = Suppressions(database[SUPPRESSIONS], refresh_s=settings.email.suppression_refresh_s)
    delivery_events = DeliveryEvents(database, retention_days=settings.email.ledger_retention_days)
    email = EmailService(
        renderer=EmailRenderer(settings.worker.templates_dir, product_name=settings.email.product_name),
        sender=sender,
        ledger=ledger,
        email_from=settings.email.sender,
        outbound=outbound,
        codes=codes,
        suppressions=suppressions,
    )

    async def start() -> None:
        try:
            await mongo.admin.command("ping")
            await ledger.ensure_indexes()
            await codes.prepare(datetime.now(UTC))
            await delivery_events.prepare(datetime.now(UTC))
            await suppressions.refresh()
            await store.ensure_indexes()
            purger.start()
        except (PyMongoError, JobError) as error:
            # The type only: a driver message may quote the URL, credentials included.
            reason = error.message if isinstance(error, JobError) else type(error).__name__
            raise SystemExit(f"cannot reach the store at MONGODB_URL: {reason}") from None

    async def ping_store() -> bool:
        reply = await mongo.admin.command("ping")
        return bool(reply.get("ok"))

    async def close() -> None:
        await purger.close()
        await outbound.close()
        await sender.close()
        log.info("email jobs by outcome: %s", dict(email.counts) or "none")
        if generator is not None:
            await generator.aclose()
        if model_budget is not None:
            used = model_budget.stats()
            log.info(
                "model budget: %d calls, %d paused by a 429, %.1f s waited in all",
                used.calls,
                used.paused,
                used.waited_s,
            )
        await ledger.aclose()
        await codes.aclose()
        await delivery_events.aclose()
        await store.aclose()
        await mongo.close()

    return Services(
        email=email,
        ads=ads,
        start=start,
        close=close,
        email_partitions=None if budget is None else budget.assign,
        delivery_events=delivery_events,
        suppressions=suppressions,
        ping_store=ping_store,
        budget_waited_s=None if budget is None else lambda: budget.stats().waited_s,
        ad_partitions=None if model_budget is None else model_budget.assign,
    )
