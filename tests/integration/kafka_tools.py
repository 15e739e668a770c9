"""Looking at the real broker from a test: consumer-group lag and topic contents."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.dlq import DeadLetterRecord, read_dead_letters


async def group_lag(bootstrap_servers: str, group_id: str, topic: str) -> int:
    """Records of `topic` not yet committed by `group_id` (all of them if it committed none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
    await admin.start()
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        end = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group_id, partitions=tps)
        lag = 0
        for tp in tps:
            meta = committed.get(tp)
            position = meta.offset if meta is not None and meta.offset >= 0 else 0
            lag += end[tp] - position
        return lag
    finally:
        await consumer.stop()
        await admin.close()


async def records_in(bootstrap_servers: str, topic: str) -> list[DeadLetterRecord]:
    return await read_dead_letters(bootstrap_servers, topic)


async def delete_topics(bootstrap_servers: str, names: tuple[str, ...]) -> None:
    """Delete those of `names` that exist, so repeated runs leave no topics behind."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in names if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def check_kafka(bootstrap_servers: str) -> None:
    """Raise unless the broker answers a topic listing within 10 s."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    try:
        await admin.start()
        await admin.list_topics()
    finally:
        await admin.close()
