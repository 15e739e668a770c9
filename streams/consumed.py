"""What the app factory needs from each consumed topic's module."""

from __future__ import annotations

from dataclasses import dataclass

from faststream.kafka import KafkaRouter

from streams.retry.routing import JobRoute, Publish


@dataclass(frozen=True)
class Consumed:
    """A topic's router, its failure route, and the publisher a due retry goes back through."""

    router: KafkaRouter
    route: JobRoute
    redeliver: Publish
