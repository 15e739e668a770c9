"""Two apps in one process share nothing: topics, clients and processors are their own."""

from __future__ import annotations

from faststream.kafka import TestKafkaBroker

from tests.streams.apps import build_test_app

WELCOME = {"type": "WELCOME_EMAIL", "to": "ada@example.com", "name": "Ada"}


async def test_two_apps_with_different_prefixes_see_only_their_own_jobs() -> None:
    blue, green = build_test_app("blue."), build_test_app("green.")
    assert blue.broker is not green.broker
    assert blue.email is not green.email

    async with TestKafkaBroker(blue.broker) as blue_broker, TestKafkaBroker(green.broker) as green_broker:
        await blue_broker.publish({**WELCOME, "job_id": "blue-1"}, topic="blue.email-jobs")
        await green_broker.publish({**WELCOME, "job_id": "green-1"}, topic="green.email-jobs")
        # A job published on the other app's topic reaches neither app's processor.
        await blue_broker.publish({**WELCOME, "job_id": "stray"}, topic="green.email-jobs")

    assert [job.job_id for job in blue.email.jobs] == ["blue-1"]
    assert [job.job_id for job in green.email.jobs] == ["green-1"]


def test_each_app_subscribes_only_to_its_own_topics() -> None:
    blue, green = build_test_app("blue."), build_test_app("green.")

    blue_topics = {t for sub in blue.broker.subscribers for t in sub.topic_names}
    green_topics = {t for sub in green.broker.subscribers for t in sub.topic_names}
    assert blue_topics == {
        "blue.email-jobs",
        "blue.email-bulk",
        "blue.ad-jobs",
        "blue.ad-results",
        "blue.ad-results.email-notifier",
        "blue.email-events",
    }
    assert all(t.startswith("green.") for t in green_topics)
    blue_publishes = {p.topic for p in blue.broker.publishers}
    assert all(t.startswith("blue.") for t in blue_publishes)
    assert {"blue.email-jobs.retry", "blue.email-jobs.dlq", "blue.ad-results"} <= blue_publishes
