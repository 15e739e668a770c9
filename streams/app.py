"""The worker: `faststream run streams.app:app`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiokafka.errors import KafkaError
from faststream import FastStream
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from processors.ads import AdCopyGenerator, AdService, AdStore
from processors.email import DeliveryLedger, EmailRenderer, EmailService, OutboxSender, ResendSender
from processors.email.senders import EmailSender
from processors.errors import JobError
from streams import __version__
from streams.admin import ensure_topics
from streams.ads import build_ads_router, publish_failed_result
from streams.broker import broker, publish_raw
from streams.docs import WorkerAsyncAPI
from streams.email import build_email_router
from streams.notifiers import build_notifier_router
from streams.prose import prose
from streams.retry import BackoffPolicy, FailureRouter, JobRoute, RetryScheduler
from streams.runtime import runtime
from streams.settings import Settings, get_settings
from streams.topics import AD_JOBS, ALL_TOPICS, EMAIL_JOBS, JOB_TOPICS

log = logging.getLogger("worker")

settings = get_settings()
failure_router = FailureRouter(publish_raw)
email_route = JobRoute(
    EMAIL_JOBS,
    BackoffPolicy(
        max_attempts=settings.email_retry_max_attempts,
        base_ms=settings.email_retry_base_ms,
        multiplier=settings.email_retry_multiplier,
        cap_ms=settings.email_retry_cap_ms,
    ),
)
ad_route = JobRoute(
    AD_JOBS,
    BackoffPolicy(
        max_attempts=settings.ad_retry_max_attempts,
        base_ms=settings.ad_retry_base_ms,
        multiplier=settings.ad_retry_multiplier,
        cap_ms=settings.ad_retry_cap_ms,
    ),
    on_dead_letter=publish_failed_result,
)
broker.include_router(build_email_router(settings, failure_router, email_route))
broker.include_router(build_ads_router(settings, failure_router, ad_route))
broker.include_router(build_notifier_router(settings))

DESCRIPTION = prose("""Background worker for a product API. The API publishes slow work as JSON jobs on
Kafka topics and returns at once; this worker sends transactional email (rendered from
templates, sent through Resend) and writes AI ad copy.

Delivery is at-least-once with idempotent effects: each job carries a producer-chosen
`job_id`, and a job is carried out at most once however often it is delivered. Transient
failures go to `<topic>.retry` and come back after exponential backoff (or the provider's
Retry-After); permanent failures and undecodable messages go to `<topic>.dlq` with the
original bytes and a reason header.""")

app = FastStream(
    broker,
    specification=WorkerAsyncAPI(
        title="Kafka job worker",
        version=__version__,
        description=DESCRIPTION,
    ),
)


HEARTBEAT_INTERVAL_S = 5.0


class _State:
    mongo: AsyncMongoClient[dict[str, object]] | None = None
    sender: EmailSender | None = None
    generator: AdCopyGenerator | None = None
    scheduler: RetryScheduler | None = None
    heartbeat: asyncio.Task[None] | None = None


async def _beat(path: Path) -> None:
    while True:
        await asyncio.to_thread(path.touch)
        await asyncio.sleep(HEARTBEAT_INTERVAL_S)


_state = _State()


def _build_sender(settings: Settings) -> EmailSender:
    if settings.resend_api_key is None:
        log.warning(
            "RESEND_API_KEY is not set: emails go to the local outbox %s, not to real inboxes",
            settings.outbox_dir.resolve(),
        )
        return OutboxSender(settings.outbox_dir)
    log.info("sending email through Resend at %s", settings.resend_api_url)
    return ResendSender(settings.resend_api_key, settings.resend_api_url, settings.resend_timeout_s)


def _build_generator(settings: Settings) -> AdCopyGenerator | None:
    if not settings.openai_model:
        log.warning(
            "OPENAI_MODEL is not set: no model configured, so ad jobs go to %s with reason "
            "'no model configured'; replay them once a model is configured",
            AD_JOBS.dlq,
        )
        return None
    log.info(
        "writing ad copy with model %s at %s", settings.openai_model, settings.openai_base_url or "OpenAI"
    )
    return AdCopyGenerator(
        model=settings.openai_model,
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        timeout_s=settings.openai_timeout_s,
        max_retries=settings.openai_max_retries,
    )


@app.on_startup
async def start_services() -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.kafka_create_topics:
        try:
            await ensure_topics(
                settings.kafka_bootstrap_servers,
                ALL_TOPICS,
                partitions=settings.kafka_topic_partitions,
                replication_factor=settings.kafka_replication_factor,
            )
        except KafkaError as error:
            raise SystemExit(
                f"cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers}: "
                f"{type(error).__name__}"
            ) from None
    mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        settings.mongodb_url.get_secret_value(),
        serverSelectionTimeoutMS=settings.mongodb_timeout_ms,
        tz_aware=True,
    )
    _state.mongo = mongo
    database = mongo[settings.mongodb_database]
    ledger = DeliveryLedger(database["email_deliveries"], lease_s=settings.email_send_lease_s)
    ads = AdStore(database["ads"])
    try:
        await mongo.admin.command("ping")
        await ledger.ensure_indexes()
        await ads.ensure_indexes()
    except (PyMongoError, JobError) as error:
        # The type only: a driver message may quote the URL, credentials included.
        reason = error.message if isinstance(error, JobError) else type(error).__name__
        raise SystemExit(f"cannot reach the store at MONGODB_URL: {reason}") from None
    _state.generator = _build_generator(settings)
    try:
        runtime.ads = AdService(ads, _state.generator, lease_s=settings.ad_lease_s)
    except ValueError as error:
        raise SystemExit(f"invalid configuration: AD_LEASE_S: {error}") from None
    _state.sender = _build_sender(settings)
    runtime.email = EmailService(
        renderer=EmailRenderer(settings.templates_dir, product_name=settings.product_name),
        sender=_state.sender,
        ledger=ledger,
        email_from=settings.email_from,
    )


@app.after_startup
async def start_retry_scheduler() -> None:
    _state.scheduler = RetryScheduler(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"{settings.kafka_group_id}.retry",
        retry_topics=[t.retry for t in JOB_TOPICS],
        publish=publish_raw,
        max_records=settings.retry_buffer_max_records,
        max_bytes=settings.retry_buffer_max_bytes,
    )
    await _state.scheduler.start()
    if settings.heartbeat_file is not None:
        _state.heartbeat = asyncio.create_task(_beat(settings.heartbeat_file), name="heartbeat")
    log.info("worker ready: consuming %s", ", ".join(t.main for t in JOB_TOPICS))


@app.on_shutdown
async def stop_services() -> None:
    if _state.heartbeat is not None:
        _state.heartbeat.cancel()
    if _state.scheduler is not None:
        await _state.scheduler.stop()
    if _state.sender is not None:
        await _state.sender.close()
    if _state.generator is not None:
        await _state.generator.aclose()
    if _state.mongo is not None:
        await _state.mongo.close()
