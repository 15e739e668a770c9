"""Fixtures for the ad processor: a fake OpenAI server, a generator that talks to it,
and a throw-away database on the MongoDB-wire store (`MONGODB_URL`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from processors.ads.generator import AdCopyGenerator
from processors.ads.jobs import AdJob
from processors.ads.store import AdStore
from tests.fakes.openai_server import FakeOpenAI

MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")
API_KEY = "sk-test-do-not-leak-7d1e"
TIMEOUT_S = 5.0


def make_job(**changes: Any) -> AdJob:
    data: dict[str, Any] = {
        "job_id": f"ad-{uuid.uuid4().hex[:12]}",
        "user_id": "user-1",
        "product": {
            "name": "Lumen desk lamp",
            "description": "A dimmable LED desk lamp with no flicker. Folds flat.",
            "url": "https://example.com/lumen",
        },
        "audience": "Students who study late",
        "tone": "warm",
        "platform": "GOOGLE_SEARCH",
        "variants": 3,
    }
    return AdJob.model_validate(data | changes)


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
async def generator(fake_openai: FakeOpenAI) -> AsyncIterator[AdCopyGenerator]:
    built = AdCopyGenerator(
        model="gpt-4o-mini", api_key=SecretStr(API_KEY), base_url=fake_openai.url, timeout_s=TIMEOUT_S
    )
    yield built
    await built.aclose()


@pytest.fixture
async def database() -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGODB_URL, serverSelectionTimeoutMS=5_000)
    name = f"test_ads_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


@pytest.fixture
async def store(database: AsyncDatabase[dict[str, Any]]) -> AsyncIterator[AdStore]:
    ad_store = AdStore(database["ads"])
    await ad_store.ensure_indexes()
    yield ad_store
    await ad_store.aclose()
