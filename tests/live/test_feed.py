"""The results consumer on the real broker: it starts at the end, and is ready when started."""

from __future__ import annotations

import asyncio
import json

import pytest

from live.feed import FeedError, ResultFeed
from live.hub import Hub
from tests.live.conftest import PARTITIONS, Results, ad_result
from tests.polling import eventually

pytestmark = pytest.mark.integration


async def test_start_returns_with_a_position_at_the_end_of_every_partition(
    kafka: str, results: Results
) -> None:
    for partition in range(PARTITIONS):
        for n in range(partition + 1):
            await results.publish(ad_result("user-a", f"old-{partition}-{n}"), partition=partition)
    hub = Hub()
    subscription = hub.subscribe("user-a")
    feed = ResultFeed(hub, bootstrap_servers=kafka, topic=results.topic)

    await feed.start()
    try:
        # Positions are fixed before start() returns: a record published now is read.
        assert feed.start_offsets == {p: p + 1 for p in range(PARTITIONS)}
        await results.publish(ad_result("user-a", "new"), partition=PARTITIONS - 1)

        async with asyncio.timeout(15):
            message = await subscription.next()
        # The first message is the new result, whole; had the feed read from earlier
        # positions, an older result would have come first on that partition.
        assert json.loads(message) == ad_result("user-a", "new")
        assert subscription.drain() == []
        assert feed.running
    finally:
        await feed.stop()
        await feed.stop()  # twice is harmless

    assert not feed.running


async def test_a_burst_for_one_user_does_not_overflow_a_connection_that_keeps_up(
    kafka: str, results: Results
) -> None:
    hub = Hub(queue_size=5)
    subscription = hub.subscribe("user-a")
    feed = ResultFeed(hub, bootstrap_servers=kafka, topic=results.topic)
    await feed.start()
    received: list[str] = []

    async def keep_up() -> None:
        while True:
            received.append(json.loads(await subscription.next())["job_id"])

    reader = asyncio.create_task(keep_up())
    try:
        burst = [ad_result("user-a", f"a-{n}") for n in range(50)]
        await results.publish_batch(burst)

        await eventually(
            lambda: len(received) == len(burst) or subscription.dropped, timeout_s=15, what="the whole burst"
        )
        # The feed yields between the records of a fetched batch, so the reader keeps up.
        assert not subscription.dropped
        assert received == [r["job_id"] for r in burst]
    finally:
        reader.cancel()
        await feed.stop()


async def test_start_fails_clearly_when_the_broker_is_not_there() -> None:
    feed = ResultFeed(Hub(), bootstrap_servers="127.0.0.1:1", topic="ad-results", ready_timeout_s=5)

    with pytest.raises(FeedError, match=r"cannot consume 'ad-results' at 127\.0\.0\.1:1: .*is the broker up"):
        await feed.start()
    assert not feed.running
