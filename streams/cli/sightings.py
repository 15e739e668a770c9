"""Where a job sits in Kafka now: the records of its retry and dead-letter topics that carry it.

A retry topic keeps its records after the scheduler redelivered them; the scheduler's
committed offset (group `<KAFKA_GROUP_ID>.retry`) tells the ones still waiting (at or
past it) from the ones already sent back. A dead letter stays until it expires, replayed
or not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from processors.decoding import json_object
from streams.dlq import DeadLetterRecord, read_dead_letters
from streams.retry import headers as h


@dataclass(frozen=True)
class Sighting:
    """One record of the job in a retry (`retry`) or dead-letter (`dlq`) topic."""

    topic: str
    kind: Literal["retry", "dlq"]
    ref: str
    attempts: int | None
    error_class: str | None
    error_message: str | None
    failed_at: datetime
    due_at: datetime | None = None
    waiting: bool | None = None
    reason: str | None = None

    def summary(self) -> str:
        error = ": ".join(part for part in (self.error_class, self.error_message) if part) or "no error given"
        if self.kind == "dlq":
            return f"in {self.topic}, reason {self.reason} ({error}), dead-lettered at {_at(self.failed_at)}"
        due = _at(self.due_at) if self.due_at else "(no due time)"
        if self.waiting:
            return f"in {self.topic}, due at {due}, after attempt {self.attempts} failed ({error})"
        return (
            f"was in {self.topic} after attempt {self.attempts} failed ({error}); sent back when due at {due}"
        )

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary()}


async def find_job(
    bootstrap_servers: str,
    *,
    job_id: str,
    retry_topics: Iterable[str],
    dlq_topics: Iterable[str],
    retry_group: str,
    client_options: Mapping[str, Any] | None = None,
) -> list[Sighting]:
    """The job's records in these topics, oldest first."""
    retry, dlq = list(retry_topics), list(dlq_topics)
    read = await asyncio.gather(
        *(read_dead_letters(bootstrap_servers, topic, client_options=client_options) for topic in retry + dlq)
    )
    mine = [[letter for letter in letters if carries(letter, job_id)] for letters in read]
    retried = [letter for letters in mine[: len(retry)] for letter in letters]
    committed = await _committed(bootstrap_servers, retry_group, retried, client_options) if retried else {}
    found = [_retry(letter, committed) for letter in retried]
    found += [_dead(letter) for letters in mine[len(retry) :] for letter in letters]
    return sorted(found, key=lambda s: (s.failed_at, s.topic, s.ref))


def carries(letter: DeadLetterRecord, job_id: str) -> bool:
    """Whether the record's value is a JSON object with this `job_id`."""
    data = json_object(letter.record.value)
    return data is not None and data.get("job_id") == job_id


def _retry(letter: DeadLetterRecord, committed: Mapping[TopicPartition, int]) -> Sighting:
    headers = letter.record.headers
    due_ms = _int(headers.get(h.DUE_AT_MS))
    tp = TopicPartition(letter.record.topic, letter.record.partition)
    return Sighting(
        topic=letter.record.topic,
        kind="retry",
        ref=letter.ref,
        attempts=_int(headers.get(h.ATTEMPT)),
        error_class=headers.get(h.ERROR_CLASS),
        error_message=headers.get(h.ERROR_MESSAGE),
        failed_at=letter.failed_at,
        due_at=datetime.fromtimestamp(due_ms / 1000, tz=UTC) if due_ms is not None else None,
        waiting=letter.record.offset >= committed.get(tp, 0),
    )


def _dead(letter: DeadLetterRecord) -> Sighting:
    headers = letter.record.headers
    return Sighting(
        topic=letter.record.topic,
        kind="dlq",
        ref=letter.ref,
        attempts=_int(headers.get(h.ATTEMPT)),
        error_class=headers.get(h.ERROR_CLASS),
        error_message=headers.get(h.ERROR_MESSAGE),
        failed_at=letter.failed_at,
        reason=letter.reason,
    )


async def _committed(
    bootstrap_servers: str,
    group: str,
    letters: list[DeadLetterRecord],
    client_options: Mapping[str, Any] | None,
) -> dict[TopicPartition, int]:
    tps = sorted({TopicPartition(d.record.topic, d.record.partition) for d in letters})
    admin = AIOKafkaAdminClient(**{**(client_options or {}), "bootstrap_servers": bootstrap_servers})
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if meta is not None and meta.offset >= 0}


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _at(when: datetime) -> str:
    return f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"
