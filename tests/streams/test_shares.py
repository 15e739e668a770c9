"""The budget share follows the partitions this process owns, and drops to none while the
group rebalances."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest
from aiokafka import TopicPartition

from streams.shares import PartitionShare, TopicShares


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


async def test_two_topics_share_one_budget_as_one_set_of_owners() -> None:
    calls, assign = recorder()
    shares = TopicShares(["email-jobs", "email-bulk"], assign)
    metadata = Metadata({"email-jobs": {0, 1, 2}, "email-bulk": {0, 1, 2, 3}})
    critical = PartitionShare("email-jobs", shares.of("email-jobs"))
    bulk = PartitionShare("email-bulk", shares.of("email-bulk"))
    critical.consumer = bulk.consumer = lambda: metadata  # type: ignore[assignment,return-value]
    await critical.on_partitions_assigned({TopicPartition("email-jobs", 1)})
    await bulk.on_partitions_assigned({TopicPartition("email-bulk", 0), TopicPartition("email-bulk", 3)})
    # email-bulk's partitions come after email-jobs' three.
    assert calls[-1] == ([1, 3, 6], 7)
    # A rebalance of one lane leaves the other's share alone.
    await bulk.on_partitions_revoked(set())
    assert calls[-1] == ([1], 7)
    # A process that owns no code partitions still gets slots for its bulk mail.
    await critical.on_partitions_revoked(set())
    await bulk.on_partitions_assigned({TopicPartition("email-bulk", 2)})
    assert calls[-1] == ([5], 7)


def test_a_topic_outside_the_shares_is_refused() -> None:
    _, assign = recorder()
    with pytest.raises(ValueError, match="ad-jobs"):
        TopicShares(["email-jobs"], assign).of("ad-jobs")
