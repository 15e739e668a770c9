"""`dispatched_subscriber(router, topic, ...)`: a `DispatchSubscriber`, registered like `router.subscriber`.

FastStream 0.7.8 picks its subscriber class in an `if` chain inside `create_subscriber`
with no way to ask for another, so this module does the three steps of
`KafkaRegistrator.subscriber` itself: build the config, specification and calls (as
`create_subscriber` does, with ack policy MANUAL and our class), register the subscriber
with the generic `Registrator.subscriber`, and attach the parser/decoder/dependencies.
Nothing in FastStream is patched. The consumer options and their defaults are read from
`KafkaRegistrator.subscriber`'s own signature, and `tests/streams/dispatch` checks that
the result matches what `router.subscriber(...)` builds, so drift fails a test.

Works on a `KafkaRouter` or a `KafkaBroker`; the subscriber sees the middlewares,
prefix and dependencies of wherever it is included, like any other.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from aiokafka import ConsumerRebalanceListener
from faststream._internal.broker.registrator import Registrator
from faststream._internal.endpoint.subscriber.call_item import CallsCollection
from faststream.exceptions import SetupError
from faststream.kafka.broker.registrator import KafkaRegistrator
from faststream.kafka.schemas import Topic
from faststream.kafka.subscriber.config import KafkaSubscriberConfig, KafkaSubscriberSpecificationConfig
from faststream.kafka.subscriber.factory import _validate_input_for_misconfigure
from faststream.kafka.subscriber.specification import KafkaSubscriberSpecification
from faststream.middlewares import AckPolicy

from streams.dispatch.dispatcher import ABANDON_WAIT_S
from streams.dispatch.options import DispatchOptions
from streams.dispatch.subscriber import DispatchSubscriber

if TYPE_CHECKING:
    from fast_depends.dependencies import Dependant
    from faststream._internal.parser import CodecProto
    from faststream._internal.types import CustomCallable
    from faststream.kafka.configs import KafkaBrokerConfig

# The options `KafkaRegistrator.subscriber` forwards to the AIOKafkaConsumer it builds.
CONSUMER_OPTIONS = (
    "group_instance_id",
    "key_deserializer",
    "value_deserializer",
    "fetch_max_wait_ms",
    "fetch_max_bytes",
    "fetch_min_bytes",
    "max_partition_fetch_bytes",
    "auto_offset_reset",
    "auto_commit_interval_ms",
    "check_crcs",
    "partition_assignment_strategy",
    "max_poll_interval_ms",
    "rebalance_timeout_ms",
    "session_timeout_ms",
    "heartbeat_interval_ms",
    "consumer_timeout_ms",
    "max_poll_records",
    "exclude_internal_topics",
    "isolation_level",
)
_ONLY_WHEN_SET = ("client_rack",)  # FastStream leaves the broker's default alone when unset


def dispatched_subscriber(
    registrator: KafkaRegistrator,
    topic: str | Topic,
    *,
    options: DispatchOptions,
    group_id: str,
    listener: ConsumerRebalanceListener | None = None,
    parser: CustomCallable | None = None,
    decoder: CustomCallable | None = None,
    codec: CodecProto | None = None,
    dependencies: Sequence[Dependant] = (),
    no_reply: bool = False,
    persistent: bool = True,
    title: str | None = None,
    description: str | None = None,
    include_in_schema: bool = True,
    **consumer_options: Any,
) -> DispatchSubscriber:
    """Register a subscriber of `topic` on `registrator` whose records run concurrently.

    Use it where you would write `router.subscriber(topic, group_id=..., ...)`, as a
    decorator too. `consumer_options` are `router.subscriber`'s Kafka consumer options
    (`auto_offset_reset`, `session_timeout_ms`, ...), with its defaults. The ack policy
    is always MANUAL: the dispatcher commits.
    """
    unknown = set(consumer_options) - {*CONSUMER_OPTIONS, *_ONLY_WHEN_SET}
    if unknown:
        raise SetupError(
            f"dispatched_subscriber() takes no {sorted(unknown)}; its consumer options are "
            f"{sorted({*CONSUMER_OPTIONS, *_ONLY_WHEN_SET})}"
        )
    connection_args = {**_stock_defaults(), **consumer_options}
    _check_revoke_fits_the_rebalance(options, connection_args)
    declared = Topic.validate(topic)
    _validate_input_for_misconfigure(
        declared,
        ack_policy=AckPolicy.MANUAL,
        max_workers=1,
        batch=False,
        pattern=None,
        partitions=(),
        client_rack=connection_args.get("client_rack"),
    )
    broker_config = cast("KafkaBrokerConfig", registrator.config)
    subscriber_config = KafkaSubscriberConfig(
        topics=[declared],
        partitions=(),
        connection_args=connection_args,
        group_id=group_id,
        listener=listener,
        pattern=None,
        no_reply=no_reply,
        _outer_config=broker_config,
        _ack_policy=AckPolicy.MANUAL,
    )
    calls = CallsCollection[Any]()
    specification = KafkaSubscriberSpecification(
        _outer_config=broker_config,
        calls=calls,
        specification_config=KafkaSubscriberSpecificationConfig(
            topics=[declared],
            partitions=(),
            pattern=None,
            title_=title,
            description_=description,
            include_in_schema=include_in_schema,
        ),
    )
    subscriber = DispatchSubscriber(subscriber_config, specification, calls, options=options)
    # The generic registration, as `KafkaRegistrator.subscriber` reaches it through `super()`.
    Registrator.subscriber(registrator, subscriber, persistent=persistent)
    subscriber.add_call(parser_=parser, decoder_=decoder, codec_=codec, dependencies_=dependencies)
    return subscriber


def _stock_defaults() -> dict[str, Any]:
    parameters = inspect.signature(KafkaRegistrator.subscriber).parameters
    return {name: parameters[name].default for name in CONSUMER_OPTIONS}


def _check_revoke_fits_the_rebalance(options: DispatchOptions, connection_args: dict[str, Any]) -> None:
    # The revoke callback runs before this member rejoins; the group waits for it only
    # up to the rebalance timeout, then drops the member (and its commits fail).
    rebalance_timeout_ms = connection_args["rebalance_timeout_ms"] or connection_args["session_timeout_ms"]
    needed_s = options.revoke_grace_s + ABANDON_WAIT_S + options.commit_timeout_s
    if needed_s >= rebalance_timeout_ms / 1000:
        raise SetupError(
            f"revoke_grace_s + {ABANDON_WAIT_S:g} s + commit_timeout_s ({needed_s:g} s) must be below "
            f"the rebalance timeout "
            f"({rebalance_timeout_ms / 1000:g} s): raise rebalance_timeout_ms or lower the grace"
        )
