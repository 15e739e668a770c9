"""Reading, summarising and replaying dead letters (used by `python -m streams.cli dlq`)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.producer import JobPublisher
from streams.retry import headers as h
from streams.retry.record import RawRecord
from streams.topics import DLQ_SUFFIX

READ_WAIT_MS = 500


@dataclass(frozen=True)
class DeadLetterRecord:
    record: RawRecord
    timestamp_ms: int

    @property
    def ref(self) -> str:
        return f"{self.record.partition}:{self.record.offset}"

    @property
    def reason(self) -> str:
        return self.record.headers.get(h.DLQ_REASON, "unknown")

    @property
    def job_type(self) -> str:
        try:
            data = json.loads(self.record.value)
        except (ValueError, RecursionError):  # not UTF-8 or JSON, too deep, a number too long
            return "(undecodable)"
        if isinstance(data, dict) and isinstance(data.get("type"), str):
            return str(data["type"])[:40]
        return "(none)"

    @property
    def origin_topic(self) -> str:
        return self.record.headers.get(h.ORIGIN_TOPIC) or self.record.topic.removesuffix(DLQ_SUFFIX)

    @property
    def failed_at(self) -> datetime:
        at_ms = int(self.record.headers.get(h.LAST_FAILURE_AT_MS) or self.timestamp_ms)
        return datetime.fromtimestamp(at_ms / 1000, tz=UTC)


async def read_dead_letters(
    bootstrap_servers: str, topic: str, *, client_options: Mapping[str, Any] | None = None
) -> list[DeadLetterRecord]:
    """Every record now in `topic`, read without a consumer group (commits nothing)."""
    options = {**(client_options or {}), "bootstrap_servers": bootstrap_servers}
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[DeadLetterRecord] = []
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            batches = await consumer.getmany(timeout_ms=READ_WAIT_MS)
            for records in batches.values():
                out.extend(
                    DeadLetterRecord(RawRecord.from_consumer_record(r), int(r.timestamp))
                    for r in records
                    if r.offset < end[TopicPartition(r.topic, r.partition)]
                )
        return sorted(out, key=lambda d: (d.record.partition, d.record.offset))
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Filter:
    reason: str | None = None
    job_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, letter: DeadLetterRecord) -> bool:
        return (
            (self.reason is None or letter.reason == self.reason)
            and (self.job_type is None or letter.job_type == self.job_type)
            and (self.since is None or letter.failed_at >= self.since)
            and (self.until is None or letter.failed_at < self.until)
        )


def summarize(letters: Iterable[DeadLetterRecord]) -> Counter[tuple[str, str]]:
    return Counter((letter.reason, letter.job_type) for letter in letters)


def replay_headers(letter: DeadLetterRecord) -> dict[str, str]:
    """The producer's own headers, without the failure history: attempts start again.

    `x-replayed-from` names this dead letter (`<topic>:<partition>:<offset>`), replacing
    the mark of an earlier replay: a processor that keeps runs (the ads) runs the job
    again as a new run, once per dead letter replayed."""
    return h.carried_over(letter.record.headers) | {h.REPLAYED_FROM: f"{letter.record.topic}:{letter.ref}"}


async def replay(
    bootstrap_servers: str,
    letters: list[DeadLetterRecord],
    *,
    target: str,
    progress: Callable[[int, int], None] = lambda done, total: None,
    client_options: Mapping[str, Any] | None = None,
) -> int:
    """Publish `letters` to `target` (where their topic is consumed), failure history reset."""
    async with JobPublisher(bootstrap_servers, client_options=client_options) as publisher:
        for done, letter in enumerate(letters, 1):
            await publisher.send_raw(
                target,
                letter.record.value,
                key=letter.record.key,
                headers=replay_headers(letter),
            )
            progress(done, len(letters))
    return len(letters)
