"""The worker's Prometheus metrics, in a registry of the app's own (`GET /metrics`).

FastStream's `KafkaPrometheusMiddleware` counts and times every message by topic. The
worker adds what only it knows, with low-cardinality labels:

- `worker_jobs_total{topic, type, outcome}`: each attempt of a job, by how it ended;
- `worker_provider_call_duration_seconds{provider, operation, outcome}`: Resend and the model;
- `worker_model_tokens_total{model, kind}`;
- `worker_jobs_in_flight{topic}`, `worker_jobs_buffered{topic}`: per job subscriber;
- `worker_retry_buffer_records`: retries waiting in memory for their due time;
- `worker_consumer_lag_records{topic, partition}`: highwater minus the consumer's position;
- `worker_rate_budget_wait_seconds_total`: time jobs waited for the provider's rate budget.

Gauges of the running parts are read when scraped; the consumer lag every few seconds.
Every counter is per job: the processors are wrapped, not the dispatch loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from processors.ads.jobs import AdJob, AdResult
from processors.decoding import json_object
from processors.email.jobs import EmailJobModel
from processors.errors import Expired, JobError, Suppressed
from streams.retry.policy import DeadLetter, RetryIn
from streams.retry.record import RawRecord
from streams.retry.routing import FailureRouter, JobRoute
from streams.services import AdProcessor, EmailProcessor

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

    from streams.dispatch import DispatchStats

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0
POSITION_TIMEOUT_S = 1.0
# Provider calls take from tens of milliseconds (Resend) to a minute (the model).
CALL_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0)
EMAIL_TYPES = frozenset({"SEND_OTP", "VERIFICATION_LINK", "WELCOME_EMAIL", "AD_READY"})
AD_TYPE = "AD"
UNKNOWN_TYPE = "unknown"


class WorkerMetrics:
    """The worker's own metrics, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.jobs = Counter(
            "worker_jobs",
            "Job attempts by how they ended: sent, already-sent, superseded, succeeded, retried, "
            "dead-lettered, expired, suppressed",
            ["topic", "type", "outcome"],
            registry=registry,
        )
        self.provider_calls = Histogram(
            "worker_provider_call_duration_seconds",
            "Duration of calls to Resend and the model, by outcome (ok, transient, permanent, error)",
            ["provider", "operation", "outcome"],
            buckets=CALL_BUCKETS_S,
            registry=registry,
        )
        self.tokens = Counter(
            "worker_model_tokens",
            "Tokens the model used, by kind (input, output)",
            ["model", "kind"],
            registry=registry,
        )
        self.lag = Gauge(
            "worker_consumer_lag_records",
            "Records on the partition not yet fetched by this worker: highwater minus position",
            ["topic", "partition"],
            registry=registry,
        )
        self._running = _RunningParts()
        registry.register(self._running)

    def observer(self, provider: str) -> ProviderObserver:
        """The observer a processor's provider client is given (`processors.observe`)."""
        return ProviderObserver(self, provider)

    def watch_dispatch(self, stats: Callable[[], Iterable[tuple[str, DispatchStats]]]) -> None:
        """`stats()`: each job subscriber's topic and dispatcher counters, when scraped."""
        self._running.dispatch = stats

    def watch_retry_buffer(self, pending: Callable[[], int | None]) -> None:
        self._running.retry_pending = pending

    def watch_rate_budget(self, waited_s: Callable[[], float]) -> None:
        self._running.budget_waited_s = waited_s

    def count(self, topic: str, job_type: str, outcome: str) -> None:
        self.jobs.labels(topic, job_type, outcome).inc()

    def email(self, processor: EmailProcessor, topic: str) -> EmailProcessor:
        return _MeteredEmail(processor, self, topic)

    def ads(self, processor: AdProcessor, topic: str) -> AdProcessor:
        return _MeteredAds(processor, self, topic)

    def failures(self, types_by_topic: Mapping[str, str]) -> FailureRouter:
        """A `FailureRouter` that counts the retried and dead-lettered jobs. Topics not in
        `types_by_topic` carry email jobs: their type is read from the record."""
        return _CountingFailureRouter(self, types_by_topic)

    async def watch_lag(self, consumers: Callable[[], Iterable[AIOKafkaConsumer | None]]) -> None:
        """Every few seconds, set the lag of every partition `consumers()` own; runs until cancelled."""
        while True:
            try:
                await self.update_lag(consumers())
            except Exception:
                log.warning("consumer lag not measured this round", exc_info=True)
            await asyncio.sleep(LAG_INTERVAL_S)

    async def update_lag(self, consumers: Iterable[AIOKafkaConsumer | None]) -> None:
        seen: set[tuple[str, ...]] = set()
        for consumer in consumers:
            if consumer is None:
                continue
            for tp in consumer.assignment():
                highwater = consumer.highwater(tp)
                if highwater is None:
                    continue  # nothing fetched from it yet
                try:
                    position = await asyncio.wait_for(consumer.position(tp), POSITION_TIMEOUT_S)
                except Exception:  # revoked meanwhile, or no position yet: next round
                    log.debug("no position for %s", tp)
                    continue
                labels: tuple[str, ...] = (tp.topic, str(tp.partition))
                self.lag.labels(*labels).set(max(0, highwater - position))
                seen.add(labels)
        for labels in _label_values(self.lag) - seen:
            # A partition this worker no longer owns: another worker reports it.
            with contextlib.suppress(KeyError):
                self.lag.remove(*labels)


class ProviderObserver:
    """`processors.observe.ModelObserver` for one provider, writing to `WorkerMetrics`."""

    def __init__(self, metrics: WorkerMetrics, provider: str) -> None:
        self._metrics = metrics
        self._provider = provider

    def call_finished(self, operation: str, duration_s: float, outcome: str) -> None:
        self._metrics.provider_calls.labels(self._provider, operation, outcome).observe(duration_s)

    def tokens_used(self, model: str, input_tokens: int, output_tokens: int) -> None:
        self._metrics.tokens.labels(model, "input").inc(input_tokens)
        self._metrics.tokens.labels(model, "output").inc(output_tokens)


class _MeteredEmail:
    def __init__(self, inner: EmailProcessor, metrics: WorkerMetrics, topic: str) -> None:
        self._inner = inner
        self._metrics = metrics
        self._topic = topic

    async def process(self, job: EmailJobModel, *, published_at: datetime | None = None) -> Any:
        outcome = await self._inner.process(job, published_at=published_at)
        if getattr(outcome, "already_sent", False):
            name = "already-sent"
        elif getattr(outcome, "dropped", None):
            name = str(outcome.dropped)
        else:
            name = "sent"
        self._metrics.count(self._topic, job.type, name)
        return outcome


class _MeteredAds:
    def __init__(self, inner: AdProcessor, metrics: WorkerMetrics, topic: str) -> None:
        self._inner = inner
        self._metrics = metrics
        self._topic = topic

    async def process(self, job: AdJob, *, replay: str | None = None) -> AdResult:
        result = await self._inner.process(job, replay=replay)
        self._metrics.count(self._topic, AD_TYPE, "succeeded")
        return result

    async def conclude(
        self, job: AdJob, error: JobError, reason: str, *, replay: str | None = None
    ) -> AdResult:
        return await self._inner.conclude(job, error, reason, replay=replay)


class _CountingFailureRouter(FailureRouter):
    def __init__(self, metrics: WorkerMetrics, types_by_topic: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metrics = metrics
        self._types = dict(types_by_topic)

    async def route(self, route: JobRoute, record: RawRecord, error: JobError) -> RetryIn | DeadLetter:
        plan = await super().route(route, record, error)
        topic = route.topics.main
        job_type = self._types.get(topic) or _email_type(record.value)
        self._metrics.count(topic, job_type, _failure_outcome(plan, error))
        return plan


def _failure_outcome(plan: RetryIn | DeadLetter, error: JobError) -> str:
    if isinstance(plan, RetryIn):
        return "retried"
    if isinstance(error, Expired):
        return "expired"
    if isinstance(error, Suppressed):
        return "suppressed"
    return "dead-lettered"


def _email_type(value: bytes | None) -> str:
    found = (json_object(value or b"") or {}).get("type")
    return found if found in EMAIL_TYPES else UNKNOWN_TYPE


def _label_values(gauge: Gauge) -> set[tuple[str, ...]]:
    return {
        tuple(sample.labels[name] for name in ("topic", "partition"))
        for metric in gauge.collect()
        for sample in metric.samples
    }


class _RunningParts(Collector):
    """Gauges and counters read from the running parts when scraped."""

    def __init__(self) -> None:
        self.dispatch: Callable[[], Iterable[tuple[str, DispatchStats]]] | None = None
        self.retry_pending: Callable[[], int | None] | None = None
        self.budget_waited_s: Callable[[], float] | None = None

    def describe(self) -> list[Metric]:
        return []  # not known before the parts run

    def collect(self) -> Iterable[Metric]:
        in_flight = GaugeMetricFamily(
            "worker_jobs_in_flight", "Jobs running now, per job subscriber", labels=["topic"]
        )
        buffered = GaugeMetricFamily(
            "worker_jobs_buffered", "Jobs fetched and not started yet, per job subscriber", labels=["topic"]
        )
        for topic, stats in self.dispatch() if self.dispatch is not None else ():
            in_flight.add_metric([topic], stats.in_flight)
            buffered.add_metric([topic], stats.buffered_records)
        yield in_flight
        yield buffered
        pending = self.retry_pending() if self.retry_pending is not None else None
        yield GaugeMetricFamily(
            "worker_retry_buffer_records",
            "Failed jobs held in memory until their retry is due",
            value=pending or 0,
        )
        yield CounterMetricFamily(
            "worker_rate_budget_wait_seconds",
            "Time jobs spent waiting for the provider's rate budget, summed over jobs",
            value=self.budget_waited_s() if self.budget_waited_s is not None else 0.0,
        )


def metrics_endpoint(registry: CollectorRegistry) -> Callable[[Scope, Receive, Send], Any]:
    """`GET /metrics`: `registry` in Prometheus' text format."""

    async def metrics(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") not in ("GET", "HEAD"):
            await Response(status_code=405, headers={"Allow": "GET"})(scope, receive, send)
            return
        await Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)(scope, receive, send)

    return metrics


def subscriber_parts(
    subscribers: Collection[Any],
) -> tuple[
    Callable[[], Iterable[tuple[str, DispatchStats]]], Callable[[], Iterable[AIOKafkaConsumer | None]]
]:
    """From a broker's subscribers: the job subscribers' dispatch counters, and every consumer."""

    def dispatch() -> Iterable[tuple[str, DispatchStats]]:
        for subscriber in subscribers:
            stats_of = getattr(subscriber, "dispatch_stats", None)
            stats = stats_of() if stats_of is not None else None
            if stats is not None:
                yield ",".join(subscriber.topic_names), stats

    def consumers() -> Iterable[AIOKafkaConsumer | None]:
        return [getattr(subscriber, "consumer", None) for subscriber in subscribers]

    return dispatch, consumers
