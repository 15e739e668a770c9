"""A process's share of a group-wide budget: the partitions of a topic it owns, told at
every rebalance.

The provider's rate limit is one budget for the whole consumer group
(`processors.email.budget`): each process takes the time slots of the partitions it
owns. This listener tells the budget which ones those are. While the group rebalances
it owns none, so an old owner stops before a new one starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

log = logging.getLogger(__name__)

Assign = Callable[[Collection[int], int], None]
"""`assign(owned, owners)`: the partition numbers this process owns, of `owners` in all."""


class PartitionShare(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, topic: str, assign: Assign) -> None:
        self._topic = topic
        self._assign = assign
        self._owners = 1
        self.consumer: Callable[[], AIOKafkaConsumer | None] = lambda: None
        """Set once the subscriber exists: the consumer whose metadata counts the partitions."""

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._assign((), self._owners)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        owned = sorted(tp.partition for tp in assigned if tp.topic == self._topic)
        consumer = self.consumer()
        partitions = consumer.partitions_for_topic(self._topic) if consumer is not None else None
        if partitions:
            self._owners = len(partitions)
        else:
            # The assignment came from this metadata, so this is not expected.
            self._owners = max([*owned, self._owners - 1]) + 1
            log.warning("no metadata for %s: taking %d partitions in all", self._topic, self._owners)
        self._assign(owned, self._owners)
        log.info(
            "%s: this process owns partitions %s of %d, so %.0f %% of the send budget",
            self._topic,
            owned,
            self._owners,
            100 * len(owned) / self._owners,
        )
