"""The Kafka headers that carry a job's failure history through retry and dead-letter topics.

All times are epoch milliseconds (UTC). Values are short ASCII text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ATTEMPT = "x-attempt"
ORIGIN_TOPIC = "x-origin-topic"
ORIGIN_PARTITION = "x-origin-partition"
ORIGIN_OFFSET = "x-origin-offset"
FIRST_FAILURE_AT_MS = "x-first-failure-at-ms"
LAST_FAILURE_AT_MS = "x-last-failure-at-ms"
DUE_AT_MS = "x-due-at-ms"
ERROR_CLASS = "x-error-class"
ERROR_MESSAGE = "x-error-message"
DLQ_REASON = "x-dlq-reason"
REPLAYED_FROM = "x-replayed-from"
"""Set by `dlq replay`: `<dlq topic>:<partition>:<offset>` of the dead letter replayed,
unique per dead letter. Kept on the record's retries and dead letters."""
PUBLISHED_AT_MS = "x-published-at-ms"
"""When the job was first published (its first record's timestamp): a retry or a move to
another topic keeps it, so deadlines and "newer code" comparisons hold across hops."""

FAILURE_HEADERS = (
    ATTEMPT,
    ORIGIN_TOPIC,
    ORIGIN_PARTITION,
    ORIGIN_OFFSET,
    FIRST_FAILURE_AT_MS,
    LAST_FAILURE_AT_MS,
    DUE_AT_MS,
    ERROR_CLASS,
    ERROR_MESSAGE,
    DLQ_REASON,
)

RETRY_HEADERS_DOC = (
    f"`{ATTEMPT}` (attempts made so far), `{ORIGIN_TOPIC}`, `{ORIGIN_PARTITION}`, "
    f"`{ORIGIN_OFFSET}` (where the job was first read), `{FIRST_FAILURE_AT_MS}`, "
    f"`{LAST_FAILURE_AT_MS}`, `{DUE_AT_MS}` (when it is redelivered; epoch ms), "
    f"`{ERROR_CLASS}` and `{ERROR_MESSAGE}` (short, never secrets or codes), "
    f"`{PUBLISHED_AT_MS}` (when the job was first published), and `{REPLAYED_FROM}` "
    f"when the job is a replay (the dead letter it was replayed from)"
)
DLQ_HEADERS_DOC = (
    f"`{DLQ_REASON}` (`oversized`, `invalid-json`, `unknown-type`, `schema`, `permanent`, "
    f"`expired`, `suppressed` "
    f"or `attempts-exhausted`), `{ERROR_CLASS}`, `{ERROR_MESSAGE}`, `{ATTEMPT}` (attempts "
    f"made), `{FIRST_FAILURE_AT_MS}`, `{LAST_FAILURE_AT_MS}`, `{ORIGIN_TOPIC}`, "
    f"`{ORIGIN_PARTITION}`, `{ORIGIN_OFFSET}`, `{PUBLISHED_AT_MS}` (when the job was first "
    f"published), `{REPLAYED_FROM}` (when the job was a replay). The value is the original "
    f"bytes, unchanged."
)

MAX_MESSAGE_CHARS = 200


def decode_headers(raw: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Kafka's raw `(name, bytes)` pairs as text; the last value of a name wins."""
    out: dict[str, str] = {}
    for name, value in raw or ():
        out[name] = (value or b"").decode("utf-8", "replace")
    return out


def _int(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class FailureHistory:
    """What earlier attempts left in the headers; empty for a first delivery."""

    attempts: int
    origin_topic: str | None
    origin_partition: int | None
    origin_offset: int | None
    first_failure_at_ms: int | None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> FailureHistory:
        return cls(
            attempts=max(0, _int(headers, ATTEMPT) or 0),
            origin_topic=headers.get(ORIGIN_TOPIC),
            origin_partition=_int(headers, ORIGIN_PARTITION),
            origin_offset=_int(headers, ORIGIN_OFFSET),
            first_failure_at_ms=_int(headers, FIRST_FAILURE_AT_MS),
        )


def published_at_ms(headers: Mapping[str, str], timestamp_ms: int | None) -> int | None:
    """When the job was first published: the header a hop kept, else the record's timestamp."""
    carried = _int(headers, PUBLISHED_AT_MS)
    if carried is not None and carried > 0:
        return carried
    return timestamp_ms if timestamp_ms is not None and timestamp_ms > 0 else None


def short_message(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line[:MAX_MESSAGE_CHARS]


def carried_over(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers a retry or dead letter keeps: the producer's own, and the replay mark.

    `x-replayed-from` stays on every retry of a replayed record, so that the job's run
    is still known as that replay when it comes back; a new replay sets a new one.
    """
    return {k: v for k, v in headers.items() if k not in FAILURE_HEADERS}
