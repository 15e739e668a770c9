"""Fixtures for the email processor: a ledger on a throw-away database of the MongoDB-wire
store (`MONGODB_URL`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from processors.email.ledger import DeliveryLedger

MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")
LEASE_S = 30


@pytest.fixture
async def collection() -> AsyncIterator[Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGODB_URL, tz_aware=True)
    db = client[f"test_ledger_{uuid.uuid4().hex[:8]}"]
    yield db["email_deliveries"]
    await client.drop_database(db.name)
    await client.close()


@pytest.fixture
async def ledger(collection: Any) -> AsyncIterator[DeliveryLedger]:
    built = DeliveryLedger(collection, lease_s=LEASE_S)
    await built.ensure_indexes()
    yield built
    await built.aclose()
