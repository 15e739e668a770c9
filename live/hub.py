"""Which connections belong to which user, and a bounded outbox for each.

hub = Hub(queue_size=100)
subscription = hub.subscribe("u-1")
hub.publish("u-1", {"job_id": "j-1", ...})  # never blocks
text = await subscription.next()           # the JSON text to send
await subscription.until_dropped()         # returns if the outbox overflowed
hub.unsubscribe(subscription)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 100


class Subscription:
    """One connection's outbox of JSON texts. When it overflows the hub drops it: nothing
    more is queued, and `until_dropped()` returns so the connection can be closed."""

    def __init__(self, user_id: str, queue_size: int) -> None:
        self.user_id = user_id
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self._dropped = asyncio.Event()

    @property
    def dropped(self) -> bool:
        return self._dropped.is_set()

    def offer(self, text: str) -> bool:
        """Queue `text` without waiting; False when the outbox is full or dropped."""
        if self.dropped:
            return False
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            return False
        return True

    def drop(self) -> None:
        """Queue nothing more, and wake `until_dropped()`. What is queued stays."""
        self._dropped.set()

    def drain(self) -> list[str]:
        """Take everything queued now, without waiting."""
        texts = []
        while not self._queue.empty():
            texts.append(self._queue.get_nowait())
        return texts

    async def next(self) -> str:
        return await self._queue.get()

    async def until_dropped(self) -> None:
        await self._dropped.wait()


class Hub:
    """Delivers each payload only to the connections of the user it is for.

    A connection whose outbox is full is dropped rather than waited for, so one slow
    client never delays the others or the Kafka consumer.
    """

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._queue_size = queue_size
        self._by_user: dict[str, set[Subscription]] = {}
        self.dropped_connections = 0

    def subscribe(self, user_id: str) -> Subscription:
        subscription = Subscription(user_id, self._queue_size)
        self._by_user.setdefault(user_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscriptions = self._by_user.get(subscription.user_id)
        if subscriptions is None:
            return
        subscriptions.discard(subscription)
        if not subscriptions:
            del self._by_user[subscription.user_id]

    def publish(self, user_id: str, payload: Mapping[str, object]) -> int:
        """Queue `payload` for every connection of `user_id`; return how many took it."""
        subscriptions = self._by_user.get(user_id)
        if not subscriptions:
            return 0
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        delivered = 0
        for subscription in list(subscriptions):
            if subscription.offer(text):
                delivered += 1
            else:
                self._drop(subscription)
        return delivered

    @property
    def connection_count(self) -> int:
        return sum(len(s) for s in self._by_user.values())

    def _drop(self, subscription: Subscription) -> None:
        log.warning(
            "dropping a connection of user %s: its outbox is full (%d messages)",
            subscription.user_id,
            self._queue_size,
        )
        self.dropped_connections += 1
        subscription.drop()
        self.unsubscribe(subscription)
