"""`dispatched_subscriber` builds what `router.subscriber` would, and TestKafkaBroker still runs it."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from aiokafka import ConsumerRebalanceListener, TopicPartition
from faststream import AckPolicy, BaseMiddleware
from faststream.exceptions import SetupError
from faststream.kafka import KafkaBroker, KafkaRouter, TestKafkaBroker
from faststream.kafka.subscriber.usecase import DefaultSubscriber
from faststream.message import StreamMessage

from streams.dispatch import DispatchOptions, DispatchSubscriber, dispatched_subscriber
from streams.dispatch.factory import CONSUMER_OPTIONS

OPTIONS = DispatchOptions(concurrency=8)


def test_it_builds_the_consumer_and_the_document_router_subscriber_would() -> None:
    ours, stock = KafkaRouter(prefix="staging."), KafkaRouter(prefix="staging.")
    common: dict[str, Any] = {
        "group_id": "worker",
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 20_000,
        "title": "jobs:consume",
        "description": "Jobs.",
    }
    dispatched = dispatched_subscriber(ours, "jobs", options=OPTIONS, **common)
    plain: DefaultSubscriber = stock.subscriber("jobs", ack_policy=AckPolicy.MANUAL, **common)

    @dispatched
    async def handle(body: dict[str, Any]) -> None: ...

    @plain
    async def handle_plain(body: dict[str, Any]) -> None: ...

    assert isinstance(dispatched, DispatchSubscriber)
    assert dispatched in ours.subscribers
    assert dispatched._connection_args == plain._connection_args
    assert dispatched._connection_args["enable_auto_commit"] is False
    assert dispatched.ack_policy is AckPolicy.MANUAL
    assert dispatched.topic_names == plain.topic_names == ["staging.jobs"]
    assert dispatched.schema() == plain.schema()


def test_the_consumer_options_are_those_router_subscriber_forwards() -> None:
    stock_parameters = inspect.signature(KafkaRouter.subscriber).parameters
    assert set(CONSUMER_OPTIONS) <= set(stock_parameters)


async def test_test_kafka_broker_runs_each_job_through_the_routers_middlewares() -> None:
    seen: list[tuple[str, Any]] = []

    class Record(BaseMiddleware):
        async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
            seen.append(("middleware", msg.raw_message.value))
            return await call_next(msg)

    broker, router = KafkaBroker(), KafkaRouter(middlewares=[Record])

    @dispatched_subscriber(router, "jobs", options=OPTIONS, group_id="worker")
    async def handle(body: dict[str, Any]) -> None:
        seen.append(("handler", body))

    broker.include_router(router)
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish({"n": 1}, "jobs", key=b"a")
        await test_broker.publish({"n": 2}, "jobs", key=b"a")
        handle.mock.assert_called_with({"n": 2})

    assert seen == [
        ("middleware", b'{"n":1}'),
        ("handler", {"n": 1}),
        ("middleware", b'{"n":2}'),
        ("handler", {"n": 2}),
    ]


def test_unknown_options_are_refused_by_name() -> None:
    with pytest.raises(SetupError, match="enable_auto_commit"):
        dispatched_subscriber(KafkaRouter(), "jobs", options=OPTIONS, group_id="g", enable_auto_commit=True)
    with pytest.raises(SetupError, match="max_workers"):
        dispatched_subscriber(KafkaRouter(), "jobs", options=OPTIONS, group_id="g", max_workers=4)


def test_the_revoke_grace_must_end_before_the_group_gives_up_on_the_member() -> None:
    slow_revoke = DispatchOptions(concurrency=8, revoke_grace_s=9)
    with pytest.raises(SetupError, match="rebalance timeout"):
        dispatched_subscriber(KafkaRouter(), "jobs", options=slow_revoke, group_id="g")
    dispatched_subscriber(
        KafkaRouter(), "jobs", options=slow_revoke, group_id="g", rebalance_timeout_ms=20_000
    )


async def test_a_listener_given_to_the_subscriber_is_called_after_the_dispatcher() -> None:
    calls: list[tuple[str, set[TopicPartition]]] = []

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
            calls.append(("revoked", revoked))

        def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
            calls.append(("assigned", assigned))

    subscriber = dispatched_subscriber(
        KafkaRouter(), "jobs", options=OPTIONS, group_id="g", listener=Listener()
    )
    tp = TopicPartition("jobs", 0)

    listener = subscriber._listener  # what FastStream hands to the consumer
    assert listener is not None
    await listener.on_partitions_assigned({tp})
    await listener.on_partitions_revoked({tp})

    assert calls == [("assigned", {tp}), ("revoked", {tp})]
