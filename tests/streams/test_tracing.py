"""Traces in memory: one trace id across a retry, and across ad -> result -> email.

FastStream's `TestKafkaBroker` runs a publish's consumers inside the publish call, so a
consumer could inherit the publisher's span without any header. `assert_one_trace`
therefore also checks that every consumer span continued the context its record carried,
and the retry scheduler runs in a task of its own, with no span current, as it does in
the worker. The same jobs run on the real broker in `tests/integration/test_tracing.py`.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest
from faststream.kafka import TestKafkaBroker
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from streams.app import create_app
from streams.broker import raw
from streams.dlq import DeadLetterRecord, replay_headers
from streams.retry import headers as h
from streams.retry.record import RawRecord
from streams.retry.scheduler import RetryScheduler
from streams.services import Services
from streams.settings import KafkaSettings, Settings
from streams.topics import TopicNames
from streams.tracing import DEFAULT_SERVICE_NAME, tracer_provider_from_env, tracing_middlewares
from tests.streams.apps import AppUnderTest, RecordingAds, RecordingEmail
from tests.streams.retry.test_scheduler import StubConsumer
from tests.streams.traces import FailsOnce, WritesCopy, assert_one_trace, trace_apps_into

OTP = {"type": "SEND_OTP", "job_id": "otp-1", "to": "ada@example.com", "code": "123456"}
AD_JOB = {
    "job_id": "ad-1",
    "user_id": "u-1",
    "product": {"name": "Lamp", "description": "A warm desk lamp for late readers."},
    "audience": "Students who study late",
    "tone": "warm",
    "platform": "GOOGLE_SEARCH",
    "notify": {"email": "ada@example.com"},
}


def build(email: Any, ads: Any) -> AppUnderTest:
    settings = Settings(kafka=KafkaSettings(topic_prefix="p."))
    app = create_app(settings, Services(email=email, ads=ads))
    return AppUnderTest(app, TopicNames.with_prefix("p."), email, ads)


def trace_id_of(headers: dict[str, str]) -> int:
    context = trace.get_current_span(TraceContextTextMapPropagator().extract(headers)).get_span_context()
    assert context.is_valid, headers
    return context.trace_id


async def test_a_job_that_fails_once_is_retried_and_sent_in_one_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spans = trace_apps_into(monkeypatch)
    email = FailsOnce()
    given = build(email, RecordingAds())
    retried = given.collect("p.email-jobs.retry")
    redeliver = raw(given.broker.publisher("p.email-jobs"))  # as the app's own redelivery publisher
    async with TestKafkaBroker(given.broker) as broker:
        await broker.publish(OTP, topic="p.email-jobs", key=b"ada@example.com")
        [(value, key, headers)] = retried.records
        consumer = StubConsumer()
        consumer.incoming.append(
            _Record("p.email-jobs.retry", 0, 0, key, value, [(k, v.encode()) for k, v in headers.items()])
        )
        scheduler = RetryScheduler(
            consumer,
            targets={"p.email-jobs.retry": redeliver},
            max_records=10,
            max_bytes=1_000_000,
            clock_ms=lambda: int(headers[h.DUE_AT_MS]),
        )
        # As in the worker: the scheduler's loop runs with no span current.
        await asyncio.create_task(scheduler.step(), context=contextvars.Context())

    assert [job.job_id for job in email.jobs] == ["otp-1", "otp-1"]
    assert scheduler.redelivered == 1
    trace_id = assert_one_trace(spans.finished())
    assert trace_id_of(headers) == trace_id
    first, second = (span for span in spans.finished() if span.name == "p.email-jobs process")
    assert (first.status.status_code, second.status.status_code) == (StatusCode.ERROR, StatusCode.UNSET)
    # The retry record is written under the failed attempt's span.
    [retry_create] = (span for span in spans.finished() if span.name == "p.email-jobs.retry create")
    assert retry_create.parent is not None
    assert retry_create.parent.span_id == first.get_span_context().span_id


async def test_an_ad_its_result_and_its_email_share_one_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    spans = trace_apps_into(monkeypatch)
    email = RecordingEmail()
    given = build(email, WritesCopy())
    async with TestKafkaBroker(given.broker) as broker:
        await broker.publish(AD_JOB, topic="p.ad-jobs", key=b"u-1")

    assert [job.type for job in email.jobs] == ["AD_READY"]
    assert_one_trace(spans.finished())
    processed = {name for name in spans.names() if name.endswith(" process")}
    assert processed == {"p.ad-jobs process", "p.ad-results process", "p.email-bulk process"}


async def test_a_bulk_job_moved_to_its_lane_stays_in_its_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    spans = trace_apps_into(monkeypatch)
    email = RecordingEmail()
    given = build(email, RecordingAds())
    welcome = {"type": "WELCOME_EMAIL", "job_id": "w-1", "to": "ada@example.com", "name": "Ada"}
    async with TestKafkaBroker(given.broker) as broker:
        await broker.publish(welcome, topic="p.email-jobs", key=b"ada@example.com")

    assert [job.job_id for job in email.jobs] == ["w-1"]
    assert_one_trace(spans.finished())
    processed = {name for name in spans.names() if name.endswith(" process")}
    assert processed == {"p.email-jobs process", "p.email-bulk process"}


async def test_a_dead_letter_keeps_its_trace_and_a_replay_carries_it_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spans = trace_apps_into(monkeypatch)
    given = build(RecordingEmail(), RecordingAds())
    dead_letters = given.collect("p.email-jobs.dlq")
    async with TestKafkaBroker(given.broker) as broker:
        await broker.publish(b"{not json", topic="p.email-jobs")
    [(value, key, headers)] = dead_letters.records
    trace_id = assert_one_trace(spans.finished())

    letter = DeadLetterRecord(RawRecord("p.email-jobs.dlq", 0, 7, key, value, headers), 0)
    replayed = replay_headers(letter)
    assert replayed[h.REPLAYED_FROM] == "p.email-jobs.dlq:0:7"
    assert trace_id_of(replayed) == trace_id


def test_replay_and_retry_keep_the_producers_trace_headers() -> None:
    producer = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "vendor=opaque",
        h.ATTEMPT: "2",
        h.DLQ_REASON: "permanent",
    }
    assert h.carried_over(producer) == {k: producer[k] for k in ("traceparent", "tracestate")}


async def test_with_the_no_op_provider_a_producers_trace_still_flows(monkeypatch: pytest.MonkeyPatch) -> None:
    # An app embedded in a process with no SDK: no spans are made, the context still travels.
    monkeypatch.setattr(
        "streams.app.tracing_middlewares",
        lambda settings: tracing_middlewares(settings, tracer_provider=trace.NoOpTracerProvider()),
    )
    given = build(RecordingEmail(), WritesCopy())
    results = given.collect("p.ad-results")
    emails = given.collect("p.email-bulk")
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with TestKafkaBroker(given.broker) as broker:
        await broker.publish(AD_JOB, topic="p.ad-jobs", key=b"u-1", headers={"traceparent": traceparent})
    [result_headers] = results.headers
    [email_headers] = emails.headers
    assert trace_id_of(result_headers) == trace_id_of(email_headers) == 0x0AF7651916CD43DD8448EB211C80319C


def test_the_provider_is_named_by_otel_service_name_and_exports_only_with_an_endpoint() -> None:
    quiet = tracer_provider_from_env({})
    named = tracer_provider_from_env(
        {"OTEL_SERVICE_NAME": "worker-eu", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    )
    try:
        assert quiet.resource.attributes["service.name"] == DEFAULT_SERVICE_NAME
        assert named.resource.attributes["service.name"] == "worker-eu"
        assert _exporters(quiet) == []
        assert _exporters(named) == ["OTLPSpanExporter"]
    finally:
        quiet.shutdown()
        named.shutdown()


def test_otel_sdk_disabled_makes_no_spans() -> None:
    assert isinstance(tracer_provider_from_env({"OTEL_SDK_DISABLED": "true"}), trace.NoOpTracerProvider)


def _exporters(provider: trace.TracerProvider) -> list[str]:
    assert isinstance(provider, TracerProvider)
    processors = provider._active_span_processor._span_processors
    return [type(p.span_exporter).__name__ for p in processors]  # type: ignore[attr-defined]


class _Record:
    def __init__(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes, headers: Any
    ) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key, self.value, self.headers = key, value, headers
        self.timestamp = None
