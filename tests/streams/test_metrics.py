"""The worker's metrics: each job counted by topic, type and outcome; the running parts
read when scraped; the consumer lag of owned partitions only; one registry per app."""

from __future__ import annotations

from typing import Any

import httpx
from aiokafka import TopicPartition
from faststream.kafka import TestKafkaBroker
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from processors.errors import Expired, PermanentError, TransientError
from streams.dispatch import DispatchStats
from streams.metrics import WorkerMetrics
from tests.streams.apps import AppUnderTest, build_test_app

WELCOME = {"type": "WELCOME_EMAIL", "job_id": "w-1", "to": "ada@example.com", "name": "Ada"}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(app: AppUnderTest) -> str:
    transport = httpx.ASGITransport(app=app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def jobs(topic: str, job_type: str, outcome: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return ("worker_jobs_total", frozenset({("topic", topic), ("type", job_type), ("outcome", outcome)}))


async def test_jobs_are_counted_by_topic_type_and_outcome() -> None:
    app = build_test_app("m.")
    bulk = app.topics.email_bulk.main
    async with TestKafkaBroker(app.broker) as broker:
        await broker.publish(WELCOME, topic=bulk)
        app.email.fail_with = TransientError("provider down")
        await broker.publish({**WELCOME, "job_id": "w-2"}, topic=bulk)
        app.email.fail_with = PermanentError("refused")
        await broker.publish({**WELCOME, "job_id": "w-3"}, topic=bulk)
        app.email.fail_with = Expired("too late")
        await broker.publish({**WELCOME, "job_id": "w-4"}, topic=bulk)
        await broker.publish(b"not json", topic=bulk)
        text = await scrape(app)

    found = samples(text)
    assert found[jobs(bulk, "WELCOME_EMAIL", "sent")] == 1
    assert found[jobs(bulk, "WELCOME_EMAIL", "retried")] == 1
    assert found[jobs(bulk, "WELCOME_EMAIL", "dead-lettered")] == 1
    assert found[jobs(bulk, "WELCOME_EMAIL", "expired")] == 1
    assert found[jobs(bulk, "unknown", "dead-lettered")] == 1
    # FastStream's own metrics, in the same registry.
    assert any(name == "faststream_received_messages_total" for name, _ in found)


async def test_an_ad_job_that_fails_is_counted_as_an_ad() -> None:
    app = build_test_app("m.")
    app.ads.fail_with = TransientError("model busy")
    job = {
        "job_id": "ad-1",
        "user_id": "u-1",
        "product": {"name": "Lamp", "description": "A lamp."},
        "audience": "students",
        "tone": "warm",
        "platform": "GOOGLE_SEARCH",
    }
    async with TestKafkaBroker(app.broker) as broker:
        await broker.publish(job, topic=app.topics.ad_jobs.main)
        text = await scrape(app)

    assert samples(text)[jobs(app.topics.ad_jobs.main, "AD", "retried")] == 1


async def test_two_apps_keep_their_own_metrics() -> None:
    first, second = build_test_app("a."), build_test_app("b.")
    async with TestKafkaBroker(first.broker) as broker:
        await broker.publish(WELCOME, topic=first.topics.email_bulk.main)
    assert "a.email-bulk" in await scrape(first)
    assert "a.email-bulk" not in await scrape(second)


def test_running_parts_are_read_when_scraped() -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    stats = {"email-jobs": _stats(in_flight=3, buffered=7)}
    metrics.watch_dispatch(lambda: stats.items())
    pending = [5]
    metrics.watch_retry_buffer(lambda: pending[0])
    metrics.watch_rate_budget(lambda: 1.5)

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert value("worker_jobs_in_flight", topic="email-jobs") == 3
    assert value("worker_jobs_buffered", topic="email-jobs") == 7
    assert value("worker_retry_buffer_records") == 5
    assert value("worker_rate_budget_wait_seconds_total") == 1.5
    stats["email-jobs"] = _stats(in_flight=0, buffered=1)
    pending[0] = 0
    assert value("worker_jobs_in_flight", topic="email-jobs") == 0
    assert value("worker_retry_buffer_records") == 0


def test_provider_observer_writes_latency_and_tokens() -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    metrics.observer("resend").call_finished("send", 0.2, "ok")
    model = metrics.observer("model")
    model.call_finished("chat", 3.0, "transient")
    model.tokens_used("gpt-x", 120, 40)

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert (
        value(
            "worker_provider_call_duration_seconds_count", provider="resend", operation="send", outcome="ok"
        )
        == 1
    )
    assert (
        value(
            "worker_provider_call_duration_seconds_sum",
            provider="model",
            operation="chat",
            outcome="transient",
        )
        == 3
    )
    assert value("worker_model_tokens_total", model="gpt-x", kind="input") == 120
    assert value("worker_model_tokens_total", model="gpt-x", kind="output") == 40


class FakeConsumer:
    def __init__(
        self, highwater: dict[TopicPartition, int | None], position: dict[TopicPartition, int]
    ) -> None:
        self.highwaters = highwater
        self.positions = position

    def assignment(self) -> set[TopicPartition]:
        return set(self.highwaters)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters[tp]

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


async def test_lag_is_highwater_minus_position_for_owned_partitions_only() -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    p0, p1, p2 = (TopicPartition("email-jobs", n) for n in range(3))
    consumer = FakeConsumer({p0: 120, p1: 5, p2: None}, {p0: 100, p1: 5})
    await metrics.update_lag([consumer, None])

    def lag(partition: int) -> float | None:
        return metrics.registry.get_sample_value(
            "worker_consumer_lag_records", {"topic": "email-jobs", "partition": str(partition)}
        )

    assert (lag(0), lag(1), lag(2)) == (20, 0, None)
    consumer.highwaters = {p1: 9}  # p0 revoked
    await metrics.update_lag([consumer])
    assert (lag(0), lag(1)) == (None, 4)


def _stats(*, in_flight: int, buffered: int) -> DispatchStats:
    fields: dict[str, Any] = dict.fromkeys(DispatchStats.__dataclass_fields__, 0)
    return DispatchStats(**{**fields, "in_flight": in_flight, "buffered_records": buffered, "paused": False})
