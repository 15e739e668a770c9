"""FastStream's Kafka subscriber, with its records run by a `Dispatcher` instead of one by one.

FastStream's poll loop (`LogicSubscriber._run_consume_loop`) reads records in offset
order and calls `consume_one(record)` for each, waiting for it. This subclass overrides
only that call (to hand the record to the dispatcher, which never blocks), `start` and
`stop`. Each job runs `process_message(record)`: FastStream's whole per-record chain
(parser, decoder, every middleware of the broker and router, handler, publishers). So a
middleware wraps one job, and `TestKafkaBroker`, which calls `process_message` itself,
works unchanged.

The ack policy is MANUAL, so FastStream never commits: its `ack()` commits the
consumer's current position and its `nack()` seeks back, both wrong when records finish
out of order. The dispatcher commits its watermark instead; a handler's `msg.ack()` or
`msg.nack()` is ignored with a warning.

`process_message` is called rather than `consume`: `consume` swallows every error (it
expects the ack middleware to have acted on it) and does nothing once the subscriber is
stopping, which would let a draining job count as done without running.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from faststream._internal.utils.functions import call_or_await
from faststream.exceptions import StopConsume
from faststream.kafka.subscriber.usecase import DefaultSubscriber

from streams.dispatch.dispatcher import Consumer, Dispatcher, DispatchStats
from streams.dispatch.options import DispatchOptions

if TYPE_CHECKING:
    from faststream._internal.endpoint.subscriber import SubscriberSpecification
    from faststream._internal.endpoint.subscriber.call_item import CallsCollection
    from faststream.kafka.subscriber.config import KafkaSubscriberConfig

log = logging.getLogger(__name__)


class DispatchSubscriber(DefaultSubscriber):
    """Build it with `streams.dispatch.dispatched_subscriber(router, topic, ...)`."""

    def __init__(
        self,
        config: KafkaSubscriberConfig,
        specification: SubscriberSpecification[Any, Any],
        calls: CallsCollection[ConsumerRecord],
        *,
        options: DispatchOptions,
    ) -> None:
        super().__init__(config, specification, calls)
        self.options = options
        self._listener = _DispatchListener(self, config.listener)
        self._dispatcher: Dispatcher[ConsumerRecord] | None = None
        self._background: set[asyncio.Task[None]] = set()

    def dispatch_stats(self) -> DispatchStats | None:
        """Counters of the running dispatcher (None when stopped): for metrics and tests."""
        return self._dispatcher.stats() if self._dispatcher is not None else None

    async def start(self) -> None:
        # Before `super().start()`: the consumer may call the listener while it starts.
        dispatcher: Dispatcher[ConsumerRecord] = Dispatcher(
            process=self._process_record,
            consumer=self._current_consumer,
            options=self.options,
            name=f"dispatch[{','.join(self.topic_names)}]",
        )
        self._dispatcher = dispatcher
        dispatcher.start()
        try:
            await super().start()
        except BaseException:
            self._dispatcher = None
            await dispatcher.close()
            raise
        self.parser._setup(_OffsetsOwnedByDispatcher())

    async def stop(self) -> None:
        dispatcher = self._dispatcher
        if dispatcher is not None:
            # The poll loop still runs meanwhile; the closed dispatcher refuses its records.
            await dispatcher.close()
        await super().stop()
        self._dispatcher = None

    async def consume_one(self, msg: ConsumerRecord) -> None:
        if self._dispatcher is not None:
            self._dispatcher.submit(msg)

    def _current_consumer(self) -> Consumer | None:
        return self.consumer

    async def _process_record(self, record: ConsumerRecord) -> None:
        try:
            await self.process_message(record)
        except StopConsume:
            # As `consume` does, but in the background: `stop` waits for this very job.
            self._in_background(self.stop())
        except SystemExit:
            self._in_background(self.stop())
            if (app := self._outer_config.context.get("app")) is not None:
                app.exit()

    def _in_background(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class _DispatchListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Tells the dispatcher of a rebalance, then the listener the subscriber was given."""

    def __init__(self, subscriber: DispatchSubscriber, inner: ConsumerRebalanceListener | None) -> None:
        self._subscriber = subscriber
        self._inner = inner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if (dispatcher := self._subscriber._dispatcher) is not None:
            await dispatcher.on_revoked(revoked)
        if self._inner is not None:
            await call_or_await(self._inner.on_partitions_revoked, revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if (dispatcher := self._subscriber._dispatcher) is not None:
            await dispatcher.on_assigned(assigned)
        if self._inner is not None:
            await call_or_await(self._inner.on_partitions_assigned, assigned)


class _OffsetsOwnedByDispatcher:
    """The consumer a message's `ack()` / `nack()` reach: both would break the watermark."""

    async def commit(self) -> None:
        log.warning("msg.ack() ignored: a dispatched subscriber commits its own watermark")

    def seek(self, partition: TopicPartition, offset: int) -> None:
        log.warning("msg.nack() ignored: a failed job is retried in place by its dispatcher")
