"""Creating the topics the worker needs, when the broker allows it, and reading their configs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code

log = logging.getLogger(__name__)

DESCRIBE_RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
MIN_INSYNC_REPLICAS = "min.insync.replicas"

TopicConfigs = Mapping[str, Mapping[str, str]]
"""Configs by topic name, e.g. `{"email-jobs.dlq": {"retention.ms": "259200000"}}`."""


async def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    *,
    partitions: int,
    replication_factor: int,
    configs: TopicConfigs | None = None,
    client_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create the missing topics, each with its `configs`; return the names created.

    With a replication factor of 3 or more, each topic created also gets
    `min.insync.replicas` (`min_insync_replicas_for`): with the producers' `acks=all`, a
    write is then acknowledged only once two brokers have it, so losing one broker loses
    no acknowledged job, and a partition down to one replica refuses writes instead.

    A topic that exists already keeps its configs: each one that differs from `configs`
    is logged as a warning, naming the topic and the current and wanted values, and left
    for the operator to change. Never fails the start-up otherwise: a broker that forbids
    creation (ACLs, managed Kafka) may already have the topics.
    """
    configs = configs or {}
    names = list(dict.fromkeys(topics))
    admin = AIOKafkaAdminClient(**{**(client_options or {}), "bootstrap_servers": bootstrap_servers})
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in names if t not in existing]
        created = await _create(admin, missing, partitions, replication_factor, configs) if missing else []
        await _warn_if_different(admin, [t for t in names if t in configs and t not in created], configs)
        return created
    finally:
        await admin.close()


async def describe_topic_configs(
    bootstrap_servers: str,
    topics: Collection[str],
    keys: Collection[str],
    *,
    client_options: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, str | None]]:
    """The values of config `keys` of each of `topics` that exists (missing topics are left out)."""
    admin = AIOKafkaAdminClient(**{**(client_options or {}), "bootstrap_servers": bootstrap_servers})
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        return await _describe(admin, [t for t in topics if t in existing], keys)
    finally:
        await admin.close()


def min_insync_replicas_for(replication_factor: int) -> int | None:
    """2 for a replication factor of 3 or more; None below (the broker's default, usually 1):
    with 2 replicas, requiring both would stop every write when one broker is down."""
    return 2 if replication_factor >= 3 else None


async def _create(
    admin: AIOKafkaAdminClient,
    missing: list[str],
    partitions: int,
    replication_factor: int,
    configs: TopicConfigs,
) -> list[str]:
    min_isr = min_insync_replicas_for(replication_factor)
    replicated = {MIN_INSYNC_REPLICAS: str(min_isr)} if min_isr is not None else {}
    new_topics = [
        NewTopic(
            t,
            num_partitions=partitions,
            replication_factor=replication_factor,
            topic_configs={**replicated, **configs.get(t, {})},
        )
        for t in missing
    ]
    try:
        response = await admin.create_topics(new_topics)
    except TopicAlreadyExistsError:
        return []  # another worker created them first
    except KafkaError as error:
        log.warning("could not create topics %s: %r; create them yourself", missing, error)
        return []
    created: list[str] = []
    for topic, error_code, *_ in response.topic_errors:
        error_type = for_code(error_code)
        if error_code == 0:
            created.append(topic)
        elif error_type is not TopicAlreadyExistsError:  # another worker was first: fine
            log.warning("could not create topic %s: %s; create it yourself", topic, error_type.__name__)
    if created:
        log.info(
            "created topics %s (%d partitions, replication factor %d%s)",
            ", ".join(created),
            partitions,
            replication_factor,
            f", {MIN_INSYNC_REPLICAS}={min_isr}" if min_isr is not None else "",
        )
        with_configs = [f"{t} ({_format(configs[t])})" for t in created if configs.get(t)]
        if with_configs:
            log.info("topic configs: %s", "; ".join(with_configs))
    return created


async def _warn_if_different(admin: AIOKafkaAdminClient, topics: list[str], configs: TopicConfigs) -> None:
    if not topics:
        return
    keys = {key for t in topics for key in configs[t]}
    try:
        current = await _describe(admin, topics, keys)
    except KafkaError as error:
        log.warning("could not read the configs of topics %s: %r", topics, error)
        return
    for topic in topics:
        if topic not in current:
            log.warning("could not read the configs of topic %s; check them yourself", topic)
            continue
        for key, wanted in configs[topic].items():
            value = current[topic].get(key)
            if value != wanted:
                log.warning(
                    "topic %s exists with %s=%s, wanted %s; not changed: run kafka-configs.sh "
                    "--alter --entity-type topics --entity-name %s --add-config %s=%s",
                    topic,
                    key,
                    value,
                    wanted,
                    topic,
                    key,
                    wanted,
                )


async def _describe(
    admin: AIOKafkaAdminClient, topics: list[str], keys: Collection[str]
) -> dict[str, dict[str, str | None]]:
    """The configs of `topics`; a topic the broker does not know (yet) is left out."""
    wanted = dict.fromkeys(keys)
    found: dict[str, dict[str, str | None]] = {}
    pending = list(topics)
    for delay_s in (*DESCRIBE_RETRY_DELAYS_S, None):
        if not pending:
            break
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t, configs=wanted) for t in pending]
        )
        unknown: list[str] = []
        for response in responses:
            for error_code, _message, _type, name, entries in response.resources:
                if error_code == 0:
                    found[name] = {entry[0]: entry[1] for entry in entries if entry[0] in wanted}
                elif for_code(error_code) is UnknownTopicOrPartitionError:
                    unknown.append(name)
        pending = unknown
        if pending and delay_s is not None:
            # A topic created a moment ago (by another worker) reaches the broker's
            # metadata a little later: until then it is "unknown".
            await asyncio.sleep(delay_s)
    return found


def _format(configs: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(configs.items()))
