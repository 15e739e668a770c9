"""Retention of the topics that hold codes and links: the configs, and topic creation on the real broker."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.admin import describe_topic_configs, ensure_topics
from streams.retention import (
    DESCRIBED_KEYS,
    HOUR_MS,
    RETENTION_CHECK_MS,
    RETENTION_MS,
    SEGMENT_MS,
    Retention,
    topic_configs,
)
from streams.settings import EmailBackoffSettings, EmailSettings, Settings, SettingsError
from streams.topics import TopicNames
from tests.integration.kafka_tools import check_kafka, delete_topics

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
TOPICS = TopicNames.with_prefix("")


def settings(**email: int) -> Settings:
    return Settings(email=EmailSettings(**email))  # type: ignore[arg-type]


def test_email_retry_and_dead_letter_topics_expire_after_dlq_retention_hours() -> None:
    configs = topic_configs(TOPICS, settings())

    assert sorted(configs) == [
        "ad-results.email-notifier.dlq",
        "ad-results.email-notifier.retry",
        "email-bulk.dlq",
        "email-bulk.retry",
        "email-jobs.dlq",
        "email-jobs.retry",
    ]
    for config in configs.values():
        assert config == {RETENTION_MS: str(72 * HOUR_MS), SEGMENT_MS: str(6 * HOUR_MS)}


def test_ad_topics_and_the_job_topics_themselves_keep_the_broker_default() -> None:
    configs = topic_configs(TOPICS, settings())

    for name in (*TOPICS.ad_jobs.all, TOPICS.ad_results, TOPICS.email_jobs.main, TOPICS.email_events):
        assert name not in configs


def test_the_prefix_is_part_of_every_name() -> None:
    configs = topic_configs(TopicNames.with_prefix("staging."), settings(dlq_retention_hours=48))

    assert configs["staging.email-jobs.dlq"][RETENTION_MS] == str(48 * HOUR_MS)


def test_a_retention_shorter_than_a_retry_may_wait_is_refused() -> None:
    # A retry honours a Retry-After of up to a day: its record must outlive that, plus an hour.
    with pytest.raises(SettingsError, match=r"DLQ_RETENTION_HOURS: must be at least 25"):
        topic_configs(TOPICS, settings(dlq_retention_hours=24))

    assert topic_configs(TOPICS, settings(dlq_retention_hours=25))["email-jobs.retry"] == {
        RETENTION_MS: str(25 * HOUR_MS),
        SEGMENT_MS: str(6 * HOUR_MS),
    }


def test_a_backoff_cap_beyond_a_day_raises_the_minimum() -> None:
    two_days = Settings(
        email=EmailSettings(dlq_retention_hours=48),
        email_retry=EmailBackoffSettings(cap_ms=48 * HOUR_MS),
    )

    with pytest.raises(SettingsError, match=r"at least 49"):
        topic_configs(TOPICS, two_days)


def test_a_record_is_gone_at_most_retention_plus_a_segment_after_it_was_written() -> None:
    written_at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    retention = Retention.from_configs(
        "email-jobs.dlq",
        {RETENTION_MS: str(72 * HOUR_MS), SEGMENT_MS: str(6 * HOUR_MS), "cleanup.policy": "delete"},
    )

    assert retention.kept_until(written_at) == written_at + timedelta(
        hours=78, milliseconds=RETENTION_CHECK_MS
    )


@pytest.mark.parametrize(
    "configs",
    [{RETENTION_MS: "-1"}, {RETENTION_MS: str(HOUR_MS), "cleanup.policy": "compact"}],
    ids=["retention-forever", "compacted"],
)
def test_a_topic_that_never_deletes_by_age_keeps_records_with_no_end(configs: dict[str, str]) -> None:
    assert Retention.from_configs("t", configs).kept_until(datetime.now(UTC)) is None


def test_segments_default_to_a_week_when_the_broker_does_not_say() -> None:
    retention = Retention.from_configs("t", {RETENTION_MS: str(HOUR_MS), SEGMENT_MS: None})

    assert retention.segment_ms == 7 * 24 * HOUR_MS


# ---------------------------------------------------------------------- the real broker


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    await check_kafka(KAFKA)
    names = f"t{uuid.uuid4().hex[:10]}."
    yield names
    await delete_topics(KAFKA, TopicNames.with_prefix(names).all)


@pytest.mark.integration
async def test_the_worker_creates_email_dead_letter_topics_with_their_retention(prefix: str) -> None:
    topics = TopicNames.with_prefix(prefix)

    created = await ensure_topics(
        KAFKA, topics.all, partitions=1, replication_factor=1, configs=topic_configs(topics, settings())
    )

    assert sorted(created) == sorted(topics.all)
    described = await describe_topic_configs(KAFKA, topics.all, DESCRIBED_KEYS)
    assert described[topics.email_jobs.dlq][RETENTION_MS] == str(72 * HOUR_MS)
    assert described[topics.email_jobs.retry][SEGMENT_MS] == str(6 * HOUR_MS)
    assert described[topics.email_notifier.dlq][RETENTION_MS] == str(72 * HOUR_MS)
    # The ad topics keep the broker's default, whatever it is.
    default = described[topics.ad_jobs.dlq][RETENTION_MS]
    assert default != str(72 * HOUR_MS)
    assert described[topics.email_jobs.main][RETENTION_MS] == default


@pytest.mark.integration
async def test_an_existing_topic_with_another_retention_is_named_in_a_warning_and_left_alone(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    topics = TopicNames.with_prefix(prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topics.email_jobs.dlq, 1, 1, topic_configs={RETENTION_MS: "3600000"})]
        )
    finally:
        await admin.close()
    configs = topic_configs(topics, settings())

    with caplog.at_level(logging.WARNING, logger="streams.admin"):
        created = await ensure_topics(KAFKA, topics.all, partitions=1, replication_factor=1, configs=configs)

    assert topics.email_jobs.dlq not in created
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # retention.ms and segment.ms, each once
    assert (
        f"topic {topics.email_jobs.dlq} exists with retention.ms=3600000, wanted {72 * HOUR_MS}; not changed"
        in warnings[0] + warnings[1]
    )
    described = await describe_topic_configs(KAFKA, [topics.email_jobs.dlq], DESCRIBED_KEYS)
    assert described[topics.email_jobs.dlq][RETENTION_MS] == "3600000"

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streams.admin"):
        again = await ensure_topics(KAFKA, topics.all, partitions=1, replication_factor=1, configs=configs)

    assert again == []
    assert [r.getMessage() for r in caplog.records] == warnings
