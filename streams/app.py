"""The worker: `faststream run streams.app:app`, or `create_app(settings)` for your own."""

from __future__ import annotations

import asyncio
import functools
import logging

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import CollectorRegistry

from streams import __version__
from streams.admin import ensure_topics
from streams.ads import build_ads_router
from streams.broker import build_broker
from streams.docs import WorkerAsyncAPI
from streams.email import build_email_router, email_lanes
from streams.events import build_events_router
from streams.health import CHECK_TIMEOUT_S, Check, Readiness, healthz, readyz
from streams.logs import configure_logging, log_context_middlewares
from streams.metrics import AD_TYPE, WorkerMetrics, metrics_endpoint, subscriber_parts
from streams.notifiers import build_email_notifier_router
from streams.prose import prose
from streams.retention import topic_configs
from streams.retry.scheduler import MAX_POLL_RECORDS, RetryScheduler
from streams.security import client_kwargs
from streams.server import WorkerApp
from streams.services import Observers, Services, build_services
from streams.settings import Settings, SettingsError, get_settings
from streams.shares import TopicShares
from streams.startup import fail_start
from streams.topics import TopicNames
from streams.tracing import tracing_middlewares
from streams.webhooks import PATH as WEBHOOK_PATH
from streams.webhooks import resend_webhook

log = logging.getLogger("worker")

NOTIFIER_TYPE = "AD_RESULT"

DESCRIPTION = prose("""Background worker for a product API. The API publishes slow work as JSON jobs on
Kafka topics and returns at once; this worker sends transactional email (rendered from
templates, sent through Resend) and writes AI ad copy.

Delivery is at-least-once with idempotent effects: each job carries a producer-chosen
`job_id`, and a job is carried out at most once however often it is delivered. Transient
failures go to `<topic>.retry` and come back after exponential backoff (or the provider's
Retry-After); permanent failures and undecodable messages go to `<topic>.dlq` with the
original bytes and a reason header.""")


def create_app(settings: Settings, services: Services | None = None) -> WorkerApp:
    """The worker for `settings`. `services` replaces the real processors (tests)."""
    topics = TopicNames.with_prefix(settings.kafka.topic_prefix)
    configs = topic_configs(topics, settings)
    # The app's own registry, not the global one: a process may build several apps (tests).
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    if services is None:
        observers = Observers(resend=metrics.observer("resend"), model=metrics.observer("model"))
        services = build_services(settings, ad_dlq=topics.ad_jobs.dlq, observers=observers)
    broker = build_broker(
        settings.kafka,
        middlewares=[
            *tracing_middlewares(settings),
            *log_context_middlewares(),
            KafkaPrometheusMiddleware(registry=registry),
        ],
    )
    failures = metrics.failures({topics.ad_jobs.main: AD_TYPE, topics.email_notifier.main: NOTIFIER_TYPE})
    lanes = email_lanes(settings, topics.email_jobs, topics.email_bulk)
    # Both lanes' partitions share the provider's budget, in this order in every process.
    shares = (
        None
        if services.email_partitions is None
        else TopicShares([lane.topics.main for lane in lanes], services.email_partitions)
    )
    consumed = [
        *(
            build_email_router(
                settings,
                lane,
                metrics.email(services.email, lane.topics.main),
                failures,
                on_partitions=None if shares is None else shares.of(lane.topics.main),
            )
            for lane in lanes
        ),
        build_ads_router(
            settings,
            topics.ad_jobs,
            topics.ad_results,
            metrics.ads(services.ads, topics.ad_jobs.main),
            failures,
            on_partitions=services.ad_partitions,
        ),
        build_email_notifier_router(settings, topics.email_notifier, topics.email_bulk.main, failures),
    ]
    for item in consumed:
        broker.include_router(item.router)
    events = build_events_router(settings, topics, services.delivery_events, services.suppressions)
    broker.include_router(events.router)
    secret = settings.resend.webhook_secret
    try:
        webhook = resend_webhook(None if secret is None else secret.get_secret_value(), events.publish)
    except ValueError as error:
        raise SettingsError(f"invalid configuration: RESEND_WEBHOOK_SECRET: {error}") from None
    checks: dict[str, Check] = {"broker": lambda: broker.ping(timeout=CHECK_TIMEOUT_S - 1)}
    if services.ping_store is not None:
        checks["store"] = services.ping_store
    readiness = Readiness(checks)
    dispatch_stats, consumers = subscriber_parts(broker.subscribers)
    metrics.watch_dispatch(dispatch_stats)
    if services.budget_waited_s is not None:
        metrics.watch_rate_budget(services.budget_waited_s)
    app = WorkerApp(
        broker,
        asgi_routes=[
            (WEBHOOK_PATH, webhook),
            ("/healthz", healthz()),
            ("/readyz", readyz(readiness)),
            ("/metrics", metrics_endpoint(registry)),
        ],
        specification=WorkerAsyncAPI(title="Kafka job worker", version=__version__, description=DESCRIPTION),
        http_host=settings.worker.http_host,
        http_port=settings.worker.http_port,
    )
    targets = {item.route.topics.retry: item.redeliver for item in consumed}
    running: list[RetryScheduler] = []
    lag: list[asyncio.Task[None]] = []

    @app.on_startup
    async def start_services() -> None:
        configure_logging(settings.worker)
        if settings.kafka.create_topics:
            try:
                await ensure_topics(
                    settings.kafka.bootstrap_servers,
                    topics.all,
                    partitions=settings.kafka.topic_partitions,
                    replication_factor=settings.kafka.replication_factor,
                    configs=configs,
                    client_options=client_kwargs(settings.kafka),
                )
            except KafkaError as error:
                kafka = settings.kafka
                fail_start(
                    f"cannot connect to Kafka at KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers} "
                    f"with KAFKA_SECURITY_PROTOCOL={kafka.security_protocol}: {type(error).__name__}; "
                    "check the address, and the SASL credentials and CA file if any"
                )
        try:
            await services.start()
        except SystemExit as error:
            fail_start(str(error))

    @app.after_startup
    async def start_retry_scheduler() -> None:
        # Built here: an aiokafka client must be created inside the running event loop.
        scheduler = RetryScheduler(
            AIOKafkaConsumer(
                **client_kwargs(settings.kafka),
                group_id=f"{settings.kafka.group_id}.retry",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=MAX_POLL_RECORDS,
            ),
            targets=targets,
            max_records=settings.retry_buffer.max_records,
            max_bytes=settings.retry_buffer.max_bytes,
        )
        await scheduler.start()
        running.append(scheduler)
        metrics.watch_retry_buffer(lambda: scheduler.pending)
        lag.append(asyncio.create_task(metrics.watch_lag(consumers), name="consumer-lag"))
        readiness.start()
        log.info(
            "worker ready: consuming %s", ", ".join(t for c in consumed for t in c.route.topics.consumed)
        )

    @app.on_shutdown
    async def stop_retry_scheduler() -> None:
        await readiness.stop()
        for task in lag:
            task.cancel()
        await asyncio.gather(*lag, return_exceptions=True)
        while running:
            await running.pop().stop()

    @app.after_shutdown
    async def close_services() -> None:
        # After the subscribers have stopped: a job still running must not lose its clients.
        await services.close()

    return app


@functools.cache
def _app_from_environment() -> WorkerApp:
    settings = get_settings()
    # Before building the app: its set-up logs too (an unset model, say).
    configure_logging(settings.worker)
    return create_app(settings)


def __getattr__(name: str) -> WorkerApp:
    """`streams.app:app`, built from the environment on first use, not at import."""
    if name == "app":
        return _app_from_environment()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
