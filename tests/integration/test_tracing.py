"""One trace id across a job's life, on the real broker: retry, dead letter and replay, ad -> email.

The worker runs in this process (`create_app` with recording processors), so its spans
reach an in-memory exporter; the retry scheduler and the subscribers run in their own
tasks, with no span shared through Python's context, so only the Kafka headers can
carry the trace from hop to hop. The "API" is a span around `JobPublisher`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from processors.ads.jobs import AdJob, Notify, Product
from processors.ads.platforms import Platform
from processors.email.jobs import SendOtpJob
from processors.errors import PermanentError
from streams.app import create_app
from streams.dlq import read_dead_letters, replay
from streams.producer import JobPublisher
from streams.server import WorkerApp
from streams.services import Services
from streams.settings import (
    AdBackoffSettings,
    EmailBackoffSettings,
    KafkaSettings,
    NotifierBackoffSettings,
    Settings,
    WorkerSettings,
)
from streams.topics import TopicNames
from tests.fakes.otlp_collector import FakeCollector, ReceivedSpan
from tests.fakes.resend_server import FakeResend, Reply
from tests.integration.conftest import KAFKA
from tests.polling import eventually
from tests.streams.traces import FailsOnce, Spans, WritesCopy, assert_one_trace, describe, trace_apps_into

FAST = {"base_ms": 200, "multiplier": 1.0, "cap_ms": 400}


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Spans:
    return trace_apps_into(monkeypatch)


@pytest.fixture
def email() -> FailsOnce:
    return FailsOnce()


@pytest.fixture
async def worker(spans: Spans, email: FailsOnce, topics: TopicNames, run_id: str) -> AsyncIterator[WorkerApp]:
    settings = Settings(
        worker=WorkerSettings(http_port=0),
        kafka=KafkaSettings(bootstrap_servers=KAFKA, topic_prefix=f"t{run_id}.", group_id=f"worker-{run_id}"),
        email_retry=EmailBackoffSettings(**FAST),
        ad_retry=AdBackoffSettings(**FAST),
        notifier_retry=NotifierBackoffSettings(**FAST),
    )
    app = create_app(settings, Services(email=email, ads=WritesCopy()))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def publish_in_a_request(spans: Spans, publish: Callable[[], Awaitable[str]]) -> int:
    """`publish()` inside an "API request" span (the producer's own trace); its trace id."""
    with spans.provider.get_tracer("api").start_as_current_span("POST /api") as span:
        await publish()
    trace_id: int = span.get_span_context().trace_id
    return trace_id


def processed(spans: Spans, topic: str) -> int:
    return spans.names().count(f"{topic} process")


async def test_a_job_that_fails_once_is_retried_and_sent_in_one_trace(
    worker: WorkerApp, spans: Spans, email: FailsOnce, topics: TopicNames, run_id: str
) -> None:
    job = SendOtpJob(type="SEND_OTP", job_id=f"{run_id}-otp", to="ada@example.com", code="424242")
    async with JobPublisher(KAFKA, topics) as publisher:
        trace_id = await publish_in_a_request(spans, lambda: publisher.email(job))

    await eventually(lambda: processed(spans, topics.email_jobs.main) == 2, timeout_s=30, what="the retry")
    assert [j.job_id for j in email.jobs] == [job.job_id, job.job_id]
    assert assert_one_trace(spans.finished()) == trace_id, "\n".join(describe(spans.finished()))
    print("\n".join(describe(spans.finished())))  # the span list for the closing note


async def test_a_dead_letter_replayed_stays_in_its_trace(
    worker: WorkerApp, spans: Spans, email: FailsOnce, topics: TopicNames, run_id: str
) -> None:
    email.error = PermanentError("the address was refused", error_class="Refused")
    job = SendOtpJob(type="SEND_OTP", job_id=f"{run_id}-dlq", to="ada@example.com", code="424242")
    async with JobPublisher(KAFKA, topics) as publisher:
        trace_id = await publish_in_a_request(spans, lambda: publisher.email(job))

    letters = await eventually(
        lambda: read_dead_letters(KAFKA, topics.email_jobs.dlq), timeout_s=30, what="the dead letter"
    )
    await replay(KAFKA, letters, target=topics.email_jobs.main)
    await eventually(lambda: processed(spans, topics.email_jobs.main) == 2, timeout_s=30, what="the replay")
    assert [j.job_id for j in email.jobs] == [job.job_id, job.job_id]
    assert assert_one_trace(spans.finished()) == trace_id


async def test_an_ad_its_result_and_its_email_share_one_trace(
    worker: WorkerApp, spans: Spans, email: FailsOnce, topics: TopicNames, run_id: str
) -> None:
    job = AdJob(
        job_id=f"{run_id}-ad",
        user_id="u-1",
        product=Product(name="Lumen desk lamp", description="Dimmable LED lamp, folds flat."),
        audience="students who study late",
        tone="warm",
        platform=Platform.GOOGLE_SEARCH,
        notify=Notify(email="ada@example.com"),
    )
    async with JobPublisher(KAFKA, topics) as publisher:
        trace_id = await publish_in_a_request(spans, lambda: publisher.ad(job))

    # The AD_READY email fails once too: its retry is part of the same trace.
    await eventually(lambda: processed(spans, topics.email_bulk.main) == 2, timeout_s=30, what="the email")
    assert [j.type for j in email.jobs] == ["AD_READY", "AD_READY"]
    assert assert_one_trace(spans.finished()) == trace_id
    names = {span.name for span in spans.finished()}
    assert {f"{topics.ad_jobs.main} process", f"{topics.ad_results} process"} <= names


async def test_the_worker_exports_a_retried_jobs_spans_with_otlp(
    start_worker: Any, fake_resend: FakeResend, topics: TopicNames, run_id: str
) -> None:
    job = SendOtpJob(type="SEND_OTP", job_id=f"{run_id}-otlp", to="ada@example.com", code="424242")
    fake_resend.script(job.job_id, Reply(503))
    with FakeCollector() as collector:
        start_worker(
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
            OTEL_SERVICE_NAME="worker-under-test",
            OTEL_BSP_SCHEDULE_DELAY="100",
            EMAIL_RETRY_BASE_MS="200",
            EMAIL_RETRY_CAP_MS="400",
        )
        async with JobPublisher(KAFKA, topics) as publisher:
            await publisher.email(job)

        main = topics.email_jobs.main

        def both_attempts() -> list[ReceivedSpan]:
            spans = collector.received()
            return spans if [s.name for s in spans].count(f"{main} process") == 2 else []

        spans = await eventually(both_attempts, timeout_s=30, what="the spans of both attempts")
    assert len(fake_resend.deliveries) == 1
    assert {s.service_name for s in spans} == {"worker-under-test"}
    assert len({s.trace_id for s in spans}) == 1, spans
    assert {f"{main}.retry publish", f"{main} publish"} <= {s.name for s in spans}
