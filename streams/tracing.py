"""OpenTelemetry traces across every hop of a job.

FastStream's `KafkaTelemetryMiddleware` starts a consumer span from a record's
`traceparent` / `tracestate` headers and writes the current span into every record
published while a handler runs. Two hops publish outside a handler's span and continue
the record's own trace with `trace_continued(headers)`: routing a failed job to its
retry or dead-letter topic (the handler's span is closed by then) and the retry
scheduler's redelivery. `dlq replay` copies the headers unchanged.

Exported with OTLP over HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, as `OTEL_SERVICE_NAME` (default
`kafka-job-worker`); the exporter reads the other standard `OTEL_EXPORTER_OTLP_*`
variables itself. With no endpoint the spans are still made and their context still
travels in the headers, so a trace id follows the job; nothing is exported.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from opentelemetry import context, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from streams.retry.routing import Publish
from streams.settings import Settings

DEFAULT_SERVICE_NAME = "kafka-job-worker"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

_PROPAGATOR = TraceContextTextMapPropagator()


def tracing_middlewares(
    settings: Settings,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    environ: Mapping[str, str] = os.environ,
) -> list[Any]:
    """The broker middleware that traces every message consumed and published.

    `tracer_provider` replaces the one built from the `OTEL_*` variables (tests pass one
    with an in-memory exporter).
    """
    provider = tracer_provider if tracer_provider is not None else tracer_provider_from_env(environ)
    # Counters off: the worker's metrics are Prometheus's (streams.metrics).
    return [KafkaTelemetryMiddleware(tracer_provider=provider, include_messages_counters=False)]


def tracer_provider_from_env(environ: Mapping[str, str] = os.environ) -> trace.TracerProvider:
    """An SDK provider named `OTEL_SERVICE_NAME`, exporting with OTLP/HTTP when an endpoint is set.

    The provider flushes its spans at interpreter exit. `OTEL_SDK_DISABLED=true` makes no
    spans; a `traceparent` the job came with still travels on.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return trace.NoOpTracerProvider()
    name = environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    if any(environ.get(variable) for variable in ENDPOINT_VARIABLES):
        # Imported only when used: the exporter brings protobuf and requests.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


@contextmanager
def trace_continued(headers: Mapping[str, str], *, span: object = None) -> Iterator[None]:
    """Publish inside a job's trace: under `span` while it is open, else the current span,
    else the trace in the record's `headers`.

    FastStream's middleware parents a publish on the current span; with none it would
    start a new trace and overwrite the record's `traceparent`. `span` is the consumer
    span FastStream keeps in its context (`CurrentSpan`), which is no longer current once
    the handler has raised.
    """
    if isinstance(span, trace.Span) and span.is_recording():
        with trace.use_span(span, end_on_exit=False):
            yield
        return
    if trace.get_current_span().get_span_context().is_valid:
        yield
        return
    token = context.attach(_PROPAGATOR.extract(dict(headers)))
    try:
        yield
    finally:
        context.detach(token)


def in_record_trace(publish: Publish) -> Publish:
    """`publish`, continuing the trace of the headers it is given (redelivery, routing)."""

    async def traced(value: bytes, key: bytes | None, headers: dict[str, str]) -> None:
        with trace_continued(headers):
            await publish(value, key, headers)

    return traced
