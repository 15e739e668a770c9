"""Spans in memory, for the trace tests: a provider, the jobs they run, and what to check."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from processors.ads.jobs import AdJob, AdResult, AdVariant, DocumentRef
from processors.ads.service import failed_result
from processors.email.jobs import EmailJobModel
from processors.errors import JobError, TransientError
from streams import app as app_module
from streams.tracing import tracing_middlewares


@dataclass(frozen=True)
class Spans:
    """A provider whose spans stay in memory."""

    provider: TracerProvider
    exporter: InMemorySpanExporter

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def names(self) -> list[str]:
        return [span.name for span in self.finished()]


def trace_apps_into(monkeypatch: pytest.MonkeyPatch) -> Spans:
    """Every app `create_app` builds in this test records its spans in memory.

    Patched for this test only: `create_app` takes no provider (yet).
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(
        app_module, "tracing_middlewares", functools.partial(tracing_middlewares, tracer_provider=provider)
    )
    return Spans(provider, exporter)


class FailsOnce:
    """An email processor whose first attempt at each job fails (transiently, unless told)."""

    def __init__(self, error: JobError | None = None) -> None:
        self.jobs: list[EmailJobModel] = []
        self.error = error or TransientError("503 from the provider", error_class="Resend503")

    async def process(self, job: EmailJobModel, *, published_at: datetime | None = None) -> None:
        self.jobs.append(job)
        if sum(seen.job_id == job.job_id for seen in self.jobs) == 1:
            raise self.error


class WritesCopy:
    """An ad processor that succeeds at once."""

    def __init__(self) -> None:
        self.jobs: list[AdJob] = []

    async def conclude(
        self, job: AdJob, error: JobError, reason: str, *, replay: str | None = None
    ) -> AdResult:
        return failed_result(job, error)

    async def process(self, job: AdJob, *, replay: str | None = None) -> AdResult:
        self.jobs.append(job)
        return AdResult(
            job_id=job.job_id,
            user_id=job.user_id,
            status="succeeded",
            variants=[AdVariant(headline="Read late, read well", body="A lamp that folds flat.")],
            document=DocumentRef(id=job.job_id),
            platform=job.platform,
            product_name=job.product.name,
            notify=job.notify,
            completed_at=datetime.now(UTC),
        )


def describe(spans: Sequence[ReadableSpan]) -> list[str]:
    """One line per span, in start order: name, trace id, parent span id (for failure messages)."""
    ordered = sorted(spans, key=lambda s: s.start_time or 0)
    lines = []
    for span in ordered:
        context = span.get_span_context()
        parent = span.parent
        parent_text = (
            "-" if parent is None else f"{parent.span_id:016x}{' remote' if parent.is_remote else ''}"
        )
        lines.append(
            f"{span.name:<45} trace={context.trace_id:032x} span={context.span_id:016x} parent={parent_text}"
        )
    return lines


def assert_one_trace(spans: Sequence[ReadableSpan]) -> int:
    """All spans share one trace id, and every consumer span continued the context its record carried.

    A record that lost its `traceparent` shows up as a consumer span with no remote parent
    (FastStream then starts a `... create` span of its own).
    """
    listing = "\n".join(describe(spans))
    trace_ids = {span.get_span_context().trace_id for span in spans}
    assert len(trace_ids) == 1, f"spans in {len(trace_ids)} traces:\n{listing}"
    for span in spans:
        if span.name.endswith(" process"):
            assert span.parent is not None, f"{span.name} has no parent:\n{listing}"
            assert span.parent.is_remote, f"{span.name} did not continue its record's trace:\n{listing}"
    return trace_ids.pop()
