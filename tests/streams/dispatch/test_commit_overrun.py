"""An offset commit that overruns its timeout: not cancelled, its error retrieved, the next one after it.

aiokafka sends a commit from a shielded task of its own (`GroupCoordinator.commit_offsets`);
cancelling `consumer.commit()` left that task to fail later with nobody to retrieve its
error, and asyncio logged "Task exception was never retrieved" after every network
partition.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import GroupCoordinatorNotAvailableError

from streams.dispatch.dispatcher import Dispatcher
from tests.polling import eventually
from tests.streams.dispatch.test_dispatcher import P0, P1, Jobs, Record, options


@dataclass
class PartitionedConsumer:
    """Commits as aiokafka does, from a shielded task; while `cut`, a commit waits for the
    network, then fails."""

    cut: bool = True
    network: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)

    def assignment(self) -> set[TopicPartition]:
        return {P0, P1}

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        await asyncio.shield(self._send(dict(offsets)))

    async def _send(self, offsets: dict[TopicPartition, int]) -> None:
        self.sent += 1
        if self.cut:
            await self.network.wait()
            raise GroupCoordinatorNotAvailableError()
        self.commits.append(offsets)


async def test_a_commit_past_its_timeout_runs_on_and_its_failure_is_retrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = PartitionedConsumer()
    subject: Dispatcher[Record] = Dispatcher(
        process=Jobs(), consumer=lambda: consumer, options=options(commit_timeout_s=0.05), name="test"
    )
    subject.start()
    subject.submit(Record(0, 0, b"a"))
    await eventually(lambda: subject.stats().commit_failures >= 3, timeout_s=5, what="commits timing out")
    assert consumer.sent == 1  # the next commits wait for the first instead of piling up

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        consumer.cut = False
        consumer.network.set()  # the partition heals: the first commit fails, the next ones go through
        await eventually(lambda: consumer.commits, timeout_s=5, what="a commit after the partition")
        await subject.close()
        gc.collect()  # an unretrieved error is reported when its task is collected
        await asyncio.sleep(0)

    assert consumer.commits[-1] == {P0: 1}
    assert "never retrieved" not in caplog.text
