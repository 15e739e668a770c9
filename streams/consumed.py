"""What the app factory needs from each consumed topic's module."""

from __future__ import annotations

from dataclasses import dataclass

from faststream.kafka import KafkaRouter

from streams.dispatch import DispatchOptions
from streams.retry.routing import JobRoute, Publish
from streams.settings import Settings


@dataclass(frozen=True)
class Consumed:
    """A topic's router, its failure route, and the publisher a due retry goes back through."""

    router: KafkaRouter
    route: JobRoute
    redeliver: Publish


def dispatch_options(settings: Settings, *, concurrency: int) -> DispatchOptions:
    """How a job subscriber runs its records: `concurrency` at once, the rest bounded."""
    consumer = settings.consumer
    return DispatchOptions(
        concurrency=concurrency,
        max_buffered_records=consumer.max_buffered_records,
        max_buffered_bytes=consumer.max_buffered_bytes,
        max_uncommitted_records=max(10_000, consumer.max_buffered_records + concurrency),
        commit_interval_ms=consumer.commit_interval_ms,
        shutdown_grace_s=settings.worker.shutdown_grace_s,
    )
