"""What every command needs: the settings, the topic names, the store and the Kafka options."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from processors.errors import JobError
from streams.cli.output import fail
from streams.security import client_kwargs
from streams.settings import Settings, get_settings
from streams.topics import TopicNames


@dataclass(frozen=True)
class Context:
    settings: Settings
    topics: TopicNames

    @classmethod
    def load(cls) -> Context:
        """From the environment; an invalid setting stops the CLI with one line naming it."""
        settings = get_settings()
        return cls(settings, TopicNames.with_prefix(settings.kafka.topic_prefix))

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka.bootstrap_servers

    @property
    def kafka_options(self) -> dict[str, Any]:
        return client_kwargs(self.settings.kafka)

    @asynccontextmanager
    async def store(self) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
        store = self.settings.store
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            store.url.get_secret_value(), serverSelectionTimeoutMS=store.timeout_ms, tz_aware=True
        )
        try:
            yield client[store.database]
        finally:
            await client.close()


def store_failed(error: Exception) -> NoReturn:
    # The type only: a driver message may quote the URL, credentials included.
    reason = error.message if isinstance(error, JobError) else type(error).__name__
    fail(f"cannot reach the store at MONGODB_URL: {reason}")


def kafka_failed(error: Exception) -> NoReturn:
    fail(f"cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS: {type(error).__name__}")
