"""The one Kafka broker object of the worker, and raw publishing for the retry machinery."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from streams.settings import get_settings

_settings = get_settings()

broker = KafkaBroker(
    _settings.kafka_bootstrap_servers,
    # A retry or dead-letter record must be durable before the origin offset is committed.
    acks="all",
    enable_idempotence=True,
    client_id="worker",
    specification_url=["kafka://127.0.0.1:9092", "kafka://kafka:9092"],
)


async def publish_raw(topic: str, value: bytes, key: bytes | None, headers: dict[str, str]) -> None:
    """Publish bytes unchanged and wait for the broker's acknowledgement."""
    await broker.publish(value, topic=topic, key=key, headers=headers)
