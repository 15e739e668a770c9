"""The `ad-results` consumer that feeds the hub.

Every notifier instance reads every result (no consumer group, no commits) from the
end of the topic: a browser only wants results that arrive while it is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError

from live.hub import Hub

log = logging.getLogger(__name__)

DEFAULT_READY_TIMEOUT_S = 30.0


class NotAResult(ValueError):
    """A record value the notifier cannot route to a user."""


class FeedError(RuntimeError):
    """The consumer could not start."""


def decode_result(value: bytes | None) -> tuple[str, dict[str, Any]]:
    """The `user_id` and the JSON object of a result record, or `NotAResult`."""
    if value is None:
        raise NotAResult("no value")
    try:
        payload = json.loads(value, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise NotAResult("not JSON") from None
    if not isinstance(payload, dict):
        raise NotAResult("not a JSON object")
    user_id = payload.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        raise NotAResult("no string user_id")
    return user_id, payload


def wants_live(payload: dict[str, Any]) -> bool:
    """Whether the job asked for live notification (`notify.live`).

    A result without `notify` (a dead-lettered message the worker could not fully read)
    still goes out: the user should learn that their job failed.
    """
    notify = payload.get("notify")
    if not isinstance(notify, dict):
        return True
    return notify.get("live") is True


def _reject_constant(name: str) -> None:
    # NaN and Infinity are not JSON; a browser's JSON.parse would reject the message.
    raise ValueError(f"{name} is not JSON")


class ResultFeed:
    """Consumes `topic` into `hub`. `start()` returns once every partition has a
    position, so a result published after it returns is delivered."""

    def __init__(
        self,
        hub: Hub,
        *,
        bootstrap_servers: str,
        topic: str,
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._hub = hub
        self._bootstrap_servers = bootstrap_servers
        self._client_options = {**(client_options or {}), "bootstrap_servers": bootstrap_servers}
        self._topic = topic
        self._ready_timeout_s = ready_timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.start_offsets: dict[int, int] = {}
        """Partition -> the offset of the first record this feed reads there."""
        self.records_received = 0
        self.records_skipped = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            self._topic,
            **self._client_options,
            client_id="live-notifier",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        try:
            async with asyncio.timeout(self._ready_timeout_s):
                await consumer.start()
                # `position` resolves "latest" to an offset now rather than at the first
                # fetch, which could come after a result was published.
                offsets = {tp.partition: await consumer.position(tp) for tp in consumer.assignment()}
        except (KafkaError, TimeoutError) as error:
            await consumer.stop()
            cause = (
                f"not ready within {self._ready_timeout_s:g}s"
                if isinstance(error, TimeoutError)
                else repr(error)
            )
            raise FeedError(
                f"cannot consume {self._topic!r} at {self._bootstrap_servers}: {cause}"
                " (is the broker up, and does the topic exist?)"
            ) from None
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self.start_offsets = dict(sorted(offsets.items()))
        self._task = asyncio.create_task(self._run(consumer), name=f"live-feed:{self._topic}")
        log.info("consuming %s from offsets %s", self._topic, self.start_offsets)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        try:
            async for record in consumer:
                self._handle(record)
                # Records of a fetched batch come without a pause; yield so the
                # connections' senders drain their outboxes between records.
                await asyncio.sleep(0)
        except Exception:
            # aiokafka retries what it can; anything else ends this feed, and /healthz
            # turns 503 so that the orchestrator restarts the notifier.
            log.exception("the %s consumer stopped", self._topic)

    def _handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.records_received += 1
        try:
            user_id, payload = decode_result(record.value)
        except NotAResult as reason:
            self.records_skipped += 1
            log.warning("skipping %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason)
            return
        if not wants_live(payload):
            return
        self._hub.publish(user_id, payload)
