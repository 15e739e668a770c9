"""Fixtures for the live (WebSocket) notifier: the real Kafka broker, a fresh results topic per
test, the notifier served by uvicorn on a free port, and a producer for results.

Tests that need Kafka fail (never skip) when the broker is not there: `make services`.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr
from starlette.applications import Starlette

from live.app import create_app
from live.tokens import issue_token
from tests.integration.kafka_tools import check_kafka

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
SECRET = SecretStr("test-secret-" + uuid.uuid4().hex)
TOKEN_TTL_S = 600
PARTITIONS = 3
START_TIMEOUT_S = 30.0


def token_for(user_id: str, *, ttl_s: int = TOKEN_TTL_S) -> str:
    return issue_token(user_id, SECRET, ttl_s, time.time())


def ad_result(user_id: str, job_id: str, *, headline: str = "A headline", **fields: Any) -> dict[str, Any]:
    """An `ad-results` value as the worker publishes it."""
    return {
        "job_id": job_id,
        "user_id": user_id,
        "status": "succeeded",
        "variants": [{"headline": headline, "body": "Some body copy.", "call_to_action": "Shop now"}],
        "error": None,
        "document": {"collection": "ads", "id": job_id},
        "model": "test-model",
        "completed_at": "2025-01-31T12:00:00Z",
        **fields,
    }


@pytest.fixture(scope="session")
def kafka() -> str:
    try:
        asyncio.run(check_kafka(KAFKA))
    except Exception as error:
        pytest.fail(f"Kafka not reachable at {KAFKA} ({error!r}); start it with `make services`")
    return KAFKA


@pytest.fixture
async def results_topic(kafka: str) -> AsyncIterator[str]:
    topic = f"t{uuid.uuid4().hex[:10]}.ad-results"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
        yield topic
        await admin.delete_topics([topic])
    finally:
        await admin.close()


class Results:
    """Publishes result values the way the worker does: JSON, keyed by user id."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def publish(self, result: dict[str, Any], *, partition: int | None = 0) -> None:
        # One partition by default: records are then handled in publish order, so a test
        # can tell that an earlier record was routed (or not) once a later one arrives.
        await self.publish_raw(json.dumps(result).encode(), key=str(result["user_id"]), partition=partition)

    async def publish_batch(self, batch: list[dict[str, Any]]) -> None:
        """Publish in one produce request, so that a consumer fetches them together."""
        sent = [
            await self._producer.send(
                self.topic, json.dumps(r).encode(), key=str(r["user_id"]).encode(), partition=0
            )
            for r in batch
        ]
        await asyncio.gather(*sent)

    async def publish_raw(self, value: bytes | None, *, key: str = "k", partition: int | None = 0) -> None:
        await self._producer.send_and_wait(self.topic, value, key=key.encode(), partition=partition)


@pytest.fixture
async def results(kafka: str, results_topic: str) -> AsyncIterator[Results]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all")
    await producer.start()
    try:
        yield Results(producer, results_topic)
    finally:
        await producer.stop()


class Notifier:
    """The notifier app served by uvicorn in a thread with its own event loop, so tests may
    block (Selenium) without stalling it."""

    def __init__(self, app: Starlette, *, send_buffer_bytes: int | None = None) -> None:
        self.app = app
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if send_buffer_bytes is not None:
            # Accepted connections inherit it (Linux): a stalled client fills it sooner.
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        # log_config=None: leave logging to pytest, so caplog sees uvicorn's records.
        config = uvicorn.Config(app, log_config=None, lifespan="on", ws_ping_interval=None)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="live-notifier", daemon=True)
        self.error: BaseException | None = None

    def ws_url(self, token: str | None) -> str:
        return f"ws://127.0.0.1:{self.port}/ws" + ("" if token is None else f"?token={token}")

    def start(self) -> Notifier:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the notifier did not start: {self.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the notifier did not start within {START_TIMEOUT_S:.0f}s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=START_TIMEOUT_S)
        self._socket.close()
        assert not self._thread.is_alive(), "the notifier did not stop"

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._socket]))
        except BaseException as error:
            self.error = error


@pytest.fixture
def notifier(kafka: str, results_topic: str) -> Iterator[Notifier]:
    app = create_app(bootstrap_servers=kafka, secret=SECRET, token_ttl_s=TOKEN_TTL_S, topic=results_topic)
    server = Notifier(app).start()
    yield server
    server.stop()
