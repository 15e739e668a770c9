"""`python -m streams.cli erase` and `suppressions` as an operator runs them, on the real broker and store."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from processors.email.ledger import DeliveryLedger
from streams.admin import ensure_topics
from streams.retention import RETENTION_CHECK_MS, topic_configs
from streams.settings import Settings
from streams.topics import TopicNames
from tests.integration.conftest import KAFKA
from tests.integration.worker import run_cli

ADA = "ada@example.com"
BOB = "bob@example.com"


def cli_env(run_id: str) -> dict[str, str]:
    return {"KAFKA_TOPIC_PREFIX": f"t{run_id}.", "MONGODB_DATABASE": f"test_{run_id}", "LOG_LEVEL": "WARNING"}


async def seed(database: Any) -> None:
    ledger = DeliveryLedger(database["email_deliveries"], lease_s=30)
    now = datetime.now(UTC)
    for job_id, to in (("otp-ada", ADA), ("otp-bob", BOB)):
        claim = await ledger.claim(job_id=job_id, email_type="SEND_OTP", recipient=to, now=now)
        await ledger.mark_sent(
            job_id=job_id,
            attempt=claim.attempt,
            provider="resend",
            provider_message_id=f"msg-{job_id}",
            now=now,
        )
    await ledger.aclose()


async def test_erase_deletes_the_address_and_says_until_when_kafka_keeps_it(
    topics: TopicNames, database: Any, run_id: str
) -> None:
    await ensure_topics(
        KAFKA, topics.all, partitions=1, replication_factor=1, configs=topic_configs(topics, Settings())
    )
    await seed(database)
    env = cli_env(run_id)
    await run_cli("suppressions", "add", ADA, env=env)
    started = datetime.now(UTC)

    out = await run_cli("erase", "--email", "Ada@Example.com", env=env)

    assert out.startswith("erased Ada@Example.com: ")
    assert "of 1 email jobs and 0 ad jobs" in out
    assert re.search(r"^\s+1\s+email_suppressions$", out, re.MULTILINE)
    dlq_topic = re.escape(topics.email_jobs.dlq)
    line = rf"^  {dlq_topic}\s+until at most (\S+ \S+)Z  \(retention 72 h \+ segment 6 h\)$"
    dlq = re.search(line, out, re.MULTILINE)
    assert dlq is not None, out
    until = datetime.strptime(dlq.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    latest = started + timedelta(hours=78, milliseconds=RETENTION_CHECK_MS)
    assert latest - timedelta(minutes=1) <= until <= latest + timedelta(minutes=1)
    for topic in (topics.email_jobs.main, topics.ad_jobs.main, topics.ad_results, topics.email_events):
        assert re.search(rf"^  {re.escape(topic)}\s+until at most ", out, re.MULTILINE), topic
    ledger = DeliveryLedger(database["email_deliveries"], lease_s=30)
    assert [entry["job_id"] for entry in await ledger.entries()] == ["otp-bob"]
    await ledger.aclose()
    assert (await run_cli("suppressions", "list", env=env)).startswith("0 suppressed addresses")


async def test_suppressions_are_added_listed_and_removed(database: Any, run_id: str) -> None:
    env = cli_env(run_id)

    added = await run_cli("suppressions", "add", "Bob@Example.com", "--reason", "complained", env=env)
    again = await run_cli("suppressions", "add", BOB, env=env)
    listed = await run_cli("suppressions", "list", env=env)
    removed = await run_cli("suppressions", "remove", BOB, env=env)
    missing = await run_cli("suppressions", "remove", BOB, env=env)

    assert added.startswith("Bob@Example.com: suppressed")
    assert again == f"{BOB}: already suppressed\n"
    assert listed.splitlines()[0] == "1 suppressed addresses"
    assert re.fullmatch(rf"{BOB}  complained \S+ \S+Z  cli", listed.splitlines()[1])
    assert removed.startswith(f"{BOB}: removed")
    assert missing == f"{BOB}: was not suppressed\n"
