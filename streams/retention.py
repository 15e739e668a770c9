"""How long Kafka keeps the records that hold codes and links.

An email job carries its OTP code or verification link in clear, and its retries and dead
letters carry the job's original bytes. A code is worth something to an attacker only
while it works, but nobody needs it after its job is settled either: so the email retry
and dead-letter topics get `retention.ms` = `DLQ_RETENTION_HOURS` (default 72 h, a long
weekend to look at dead letters) instead of the broker's default (7 days unless set).

Kafka deletes whole segments, and only once a segment's newest record is older than
`retention.ms`; a topic that keeps receiving records only starts a new segment every
`segment.ms` (7 days by default). So these topics also get a `segment.ms` of at most
6 hours, and a record is gone at most `retention.ms + segment.ms` (plus the broker's
retention check, every 5 minutes by default) after it was written.

A retry record must outlive its wait on the retry topic: the scheduler holds it in memory,
but after a restart it reads it again from the topic. The longest wait is the larger of
the backoff cap and the longest `Retry-After` honoured (`BackoffPolicy.max_retry_after_ms`,
a day), so `DLQ_RETENTION_HOURS` below that wait plus an hour is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from streams.retry.policy import BackoffPolicy
from streams.settings import Settings, SettingsError
from streams.topics import TopicNames

RETENTION_MS = "retention.ms"
SEGMENT_MS = "segment.ms"
CLEANUP_POLICY = "cleanup.policy"
DESCRIBED_KEYS = (RETENTION_MS, SEGMENT_MS, CLEANUP_POLICY)
"""The topic configs that decide how long a record stays (`describe_topic_configs`)."""

HOUR_MS = 3_600_000
MAX_SEGMENT_MS = 6 * HOUR_MS
RETRY_MARGIN_MS = HOUR_MS
"""How much longer than the longest retry wait a retry topic keeps its records."""
RETENTION_CHECK_MS = 5 * 60_000
"""The broker's default `log.retention.check.interval.ms`: how often it deletes expired segments."""


def longest_retry_wait_ms(policies: Iterable[BackoffPolicy]) -> int:
    """The longest a retry record may wait on its topic before it is due."""
    return max(max(policy.cap_ms, policy.max_retry_after_ms) for policy in policies)


def min_retry_retention_hours(policies: Iterable[BackoffPolicy]) -> int:
    return math.ceil((longest_retry_wait_ms(policies) + RETRY_MARGIN_MS) / HOUR_MS)


def topic_configs(topics: TopicNames, settings: Settings) -> dict[str, dict[str, str]]:
    """Configs for the topics the worker creates: the email retry and dead-letter topics
    expire after `DLQ_RETENTION_HOURS`; the others keep the broker's defaults.

    Raises `SettingsError` when `DLQ_RETENTION_HOURS` is shorter than a retry may wait.
    """
    hours = settings.email.dlq_retention_hours
    policies = (settings.email_retry.policy(), settings.notifier_retry.policy())
    minimum_hours = min_retry_retention_hours(policies)
    if hours < minimum_hours:
        raise SettingsError(
            f"invalid configuration: DLQ_RETENTION_HOURS: must be at least {minimum_hours}: a retry "
            f"may wait {longest_retry_wait_ms(policies) / HOUR_MS:g} h on its topic"
        )
    retention_ms = hours * HOUR_MS
    configs = {RETENTION_MS: str(retention_ms), SEGMENT_MS: str(min(retention_ms, MAX_SEGMENT_MS))}
    return {name: dict(configs) for jobs in topics.email_topics for name in (jobs.retry, jobs.dlq)}


@dataclass(frozen=True)
class Retention:
    """How long one topic keeps a record, as its configs say."""

    topic: str
    retention_ms: int | None
    """None: records are never deleted by age (`retention.ms=-1`, or a compacted topic)."""
    segment_ms: int

    @classmethod
    def from_configs(cls, topic: str, configs: Mapping[str, str | None]) -> Retention:
        retention = int(configs.get(RETENTION_MS) or -1)
        deletes = "delete" in (configs.get(CLEANUP_POLICY) or "delete").split(",")
        return cls(
            topic,
            retention_ms=retention if retention >= 0 and deletes else None,
            segment_ms=int(configs.get(SEGMENT_MS) or 7 * 24 * HOUR_MS),
        )

    def kept_until(self, written_at: datetime) -> datetime | None:
        """When a record written at `written_at` is gone at the latest; None: never by age."""
        if self.retention_ms is None:
            return None
        return written_at + timedelta(milliseconds=self.retention_ms + self.segment_ms + RETENTION_CHECK_MS)
