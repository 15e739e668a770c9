"""The budget share follows the partitions this process owns, and drops to none while the
group rebalances."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from aiokafka import TopicPartition

from streams.shares import PartitionShare


class Metadata:
    def __init__(self, partitions: dict[str, set[int]]) -> None:
        self._partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self._partitions.get(topic)


def recorder() -> tuple[list[tuple[list[int], int]], Any]:
    calls: list[tuple[list[int], int]] = []

    def assign(owned: Collection[int], owners: int) -> None:
        calls.append((sorted(owned), owners))

    return calls, assign


async def test_the_share_is_the_owned_partitions_of_the_topic_and_none_while_rebalancing() -> None:
    calls, assign = recorder()
    share = PartitionShare("email-jobs", assign)
    metadata = Metadata({"email-jobs": {0, 1, 2}})
    share.consumer = lambda: metadata  # type: ignore[assignment, return-value]
    await share.on_partitions_assigned(
        {TopicPartition("email-jobs", 2), TopicPartition("email-jobs", 0), TopicPartition("other", 1)}
    )
    await share.on_partitions_revoked({TopicPartition("email-jobs", 2), TopicPartition("email-jobs", 0)})
    await share.on_partitions_assigned({TopicPartition("email-jobs", 1)})
    assert calls == [([0, 2], 3), ([], 3), ([1], 3)]


async def test_without_metadata_the_share_never_counts_fewer_partitions_than_it_owns() -> None:
    calls, assign = recorder()
    share = PartitionShare("email-jobs", assign)
    await share.on_partitions_assigned({TopicPartition("email-jobs", 4)})
    assert calls == [([4], 5)]
