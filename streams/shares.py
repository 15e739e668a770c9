"""A process's share of a group-wide budget: the partitions of a topic it owns, told at
every rebalance.

The provider's rate limit is one budget for the whole consumer group
(`processors.email.budget`): each process takes the time slots of the partitions it
owns. This listener tells the budget which ones those are. While the group rebalances
it owns none, so an old owner stops before a new one starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence

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
        log.info("%s: this process owns partitions %s of %d", self._topic, owned, self._owners)


class TopicShares:
    """Several topics' partitions as one set of owners of one budget: partition `p` of the
    `i`-th topic is owner `p` plus the partition counts of the topics before it. Every
    process must list the topics in the same order."""

    def __init__(self, topics: Sequence[str], assign: Assign) -> None:
        self._topics = tuple(topics)
        self._assign = assign
        self._owned: dict[str, tuple[int, ...]] = dict.fromkeys(self._topics, ())
        self._counts: dict[str, int] = dict.fromkeys(self._topics, 0)

    def of(self, topic: str) -> Assign:
        """The `assign` to give `topic`'s `PartitionShare`."""
        if topic not in self._owned:
            raise ValueError(f"{topic!r} is not one of {list(self._topics)}")

        def assign(owned: Collection[int], owners: int) -> None:
            self._owned[topic] = tuple(owned)
            self._counts[topic] = owners
            self._update()

        return assign

    def _update(self) -> None:
        owned: list[int] = []
        offset = 0
        for topic in self._topics:
            owned.extend(offset + partition for partition in self._owned[topic])
            offset += self._counts[topic]
        if offset:
            self._assign(owned, offset)
            log.info(
                "this process owns %d of the %d partitions that share the send budget (%.0f %%)",
                len(owned),
                offset,
                100 * len(owned) / offset,
            )
