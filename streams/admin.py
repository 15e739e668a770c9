"""Creating the topics the worker needs, when the broker allows it."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)


async def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    *,
    partitions: int,
    replication_factor: int,
    client_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create the missing topics; return the names created. Never fails the start-up:
    a broker that forbids creation (ACLs, managed Kafka) may already have them."""
    options = {**(client_options or {}), "bootstrap_servers": bootstrap_servers}
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if not missing:
            return []
        try:
            await admin.create_topics(
                [
                    NewTopic(t, num_partitions=partitions, replication_factor=replication_factor)
                    for t in missing
                ]
            )
        except TopicAlreadyExistsError:
            pass  # another worker created them first
        except KafkaError as error:
            log.warning("could not create topics %s: %r; create them yourself", missing, error)
            return []
        log.info("created topics %s (%d partitions)", ", ".join(missing), partitions)
        return missing
    finally:
        await admin.close()
