"""The hub: results reach only their user's connections; a slow connection is dropped."""

from __future__ import annotations

import asyncio
import json

import pytest

from live.hub import Hub, Subscription


async def test_a_user_receives_only_their_own_results() -> None:
    hub = Hub()
    alice, alice_tab, bob = hub.subscribe("alice"), hub.subscribe("alice"), hub.subscribe("bob")

    assert hub.publish("alice", {"user_id": "alice", "job_id": "a-1"}) == 2
    assert hub.publish("bob", {"user_id": "bob", "job_id": "b-1"}) == 1
    assert hub.publish("carol", {"user_id": "carol", "job_id": "c-1"}) == 0

    assert [json.loads(m)["job_id"] for m in alice.drain()] == ["a-1"]
    assert [json.loads(m)["job_id"] for m in alice_tab.drain()] == ["a-1"]
    assert [json.loads(m)["job_id"] for m in bob.drain()] == ["b-1"]


async def test_user_ids_match_exactly() -> None:
    hub = Hub()
    subscription = hub.subscribe("u-1")

    for near_miss in ("u-10", "U-1", "u-1 ", "u"):
        assert hub.publish(near_miss, {"user_id": near_miss}) == 0

    assert subscription.drain() == []


async def test_the_payload_is_forwarded_as_json_unchanged() -> None:
    hub = Hub()
    subscription = hub.subscribe("u-1")
    payload = {"user_id": "u-1", "variants": [{"headline": "Ünïcode <b>&</b>"}], "extra": {"n": 1.5}}

    hub.publish("u-1", payload)

    assert json.loads(await subscription.next()) == payload


async def test_unsubscribed_connection_gets_nothing() -> None:
    hub = Hub()
    first, second = hub.subscribe("u-1"), hub.subscribe("u-1")

    hub.unsubscribe(first)
    hub.unsubscribe(first)  # twice is harmless

    assert hub.publish("u-1", {"user_id": "u-1"}) == 1
    assert first.drain() == []
    assert len(second.drain()) == 1
    hub.unsubscribe(second)
    assert hub.connection_count == 0


async def test_a_slow_connection_is_dropped_without_delaying_the_others() -> None:
    hub = Hub(queue_size=2)
    slow, fast, other_user = hub.subscribe("u-1"), hub.subscribe("u-1"), hub.subscribe("u-2")

    for n in range(2):
        hub.publish("u-1", {"user_id": "u-1", "n": n})
        await fast.next()  # the fast connection keeps up
    delivered = hub.publish("u-1", {"user_id": "u-1", "n": 2})

    assert delivered == 1
    assert slow.dropped
    assert not fast.dropped
    async with asyncio.timeout(1):
        await slow.until_dropped()
    assert hub.dropped_connections == 1
    assert hub.connection_count == 2  # fast and other_user
    # The slow one keeps what fit, and gets nothing more.
    assert hub.publish("u-1", {"user_id": "u-1", "n": 3}) == 1
    assert slow.drain() == ['{"user_id":"u-1","n":0}', '{"user_id":"u-1","n":1}']
    assert [json.loads(m)["n"] for m in fast.drain()] == [2, 3]
    assert other_user.drain() == []


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Hub(queue_size=0)


async def test_a_dropped_subscription_takes_nothing_more_but_keeps_what_it_holds() -> None:
    subscription = Subscription("u-1", queue_size=2)

    assert subscription.offer("one")
    subscription.drop()

    assert subscription.dropped
    assert not subscription.offer("two")
    async with asyncio.timeout(1):
        await subscription.until_dropped()
    assert subscription.drain() == ["one"]
    assert subscription.drain() == []


def test_a_full_subscription_refuses_without_waiting() -> None:
    subscription = Subscription("u-1", queue_size=1)

    assert subscription.offer("one")
    assert not subscription.offer("two")
    assert not subscription.dropped  # dropping is the hub's decision
    assert subscription.drain() == ["one"]
