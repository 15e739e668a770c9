"""The Kafka broker of one app, built from settings, and raw publishing through publishers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from faststream.kafka import KafkaBroker

from streams.retry.routing import Publish
from streams.security import kafka_security
from streams.settings import KafkaSettings

SPECIFICATION_URLS = ["kafka://127.0.0.1:9092", "kafka://kafka:9092"]

# FastStream's own lines ("Received", "Processed" for every message, subscribers starting):
# DEBUG, through the worker's handlers rather than the stdout handler FastStream would add.
log = logging.getLogger(__name__)


class _NotCancelledJobs(logging.Filter):
    """Drops FastStream's line for a job that was cancelled.

    FastStream logs whatever a handler raises at ERROR with its traceback, a
    `CancelledError` too: a job cut off at a revoke or a shutdown, whose record is read
    again by the partition's next owner. That is no error, and the dispatcher already
    says it once per revoke with the count ("cancelling N jobs still running"), or per
    job when the cancellation came from inside it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, asyncio.CancelledError)


log.addFilter(_NotCancelledJobs())


def build_broker(kafka: KafkaSettings, *, middlewares: Sequence[Any] = ()) -> KafkaBroker:
    """`middlewares` wrap every message the broker consumes or publishes (metrics, traces)."""
    return KafkaBroker(
        # FastStream wraps a string in a list, and aiokafka splits only a string on commas:
        # "a:9092,b:9092" would be one host named "a:9092,b". A list of addresses it is.
        [address.strip() for address in kafka.bootstrap_servers.split(",") if address.strip()],
        # A retry or dead-letter record must be durable before the origin offset is committed.
        acks="all",
        enable_idempotence=True,
        client_id="worker",
        security=kafka_security(kafka),
        specification_url=SPECIFICATION_URLS,
        middlewares=tuple(middlewares),
        logger=log,
        log_level=logging.DEBUG,
    )


def raw(publisher: Any) -> Publish:
    """`Publish` through a declared publisher: the bytes unchanged, acknowledged by the broker."""

    async def publish(value: bytes, key: bytes | None, headers: dict[str, str]) -> None:
        await publisher.publish(value, key=key, headers=headers)

    return publish
