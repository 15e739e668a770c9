"""A Kafka record as the retry machinery sees it, independent of the client library."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.retry.headers import decode_headers


@dataclass(frozen=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    timestamp_ms: int | None = None

    @classmethod
    def from_consumer_record(cls, record: Any) -> RawRecord:
        """From an aiokafka `ConsumerRecord` (or FastStream's in-memory test record)."""
        value = record.value
        if isinstance(value, str):
            value = value.encode()
        key = record.key
        if isinstance(key, str):
            key = key.encode()
        return cls(
            topic=record.topic,
            partition=int(record.partition or 0),
            offset=int(record.offset or 0),
            key=key,
            value=value or b"",
            headers=decode_headers(record.headers),
            timestamp_ms=_timestamp_ms(record),
        )

    def __repr__(self) -> str:  # the value may hold an OTP code: never print it
        return f"RawRecord({self.topic}[{self.partition}]@{self.offset}, {len(self.value)} bytes)"


def _timestamp_ms(record: Any) -> int | None:
    timestamp = getattr(record, "timestamp", None)
    return int(timestamp) if isinstance(timestamp, int | float) and timestamp > 0 else None
