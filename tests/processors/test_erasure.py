"""Erasing an address from the real MongoDB-wire store: everything about it goes, nothing else does.

The store is seeded through the real APIs (ledger claims, sends, a retry, batches; delivery
events; sent-code records; ad copies and claims; suppressions), for the erased address and
for others, and then searched document by document, compressed batches included.
"""

from __future__ import annotations

import json
import os
import re
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from processors.ads.generator import GeneratedCopy, TokenUsage
from processors.ads.jobs import AdVariant
from processors.ads.store import AdStore
from processors.email.batches import RecordedBatch
from processors.email.delivery_events import DeliveryEvents
from processors.email.events import DeliveryEvent, EventKind
from processors.email.ledger import DeliveryLedger, Status
from processors.email.supersession import LatestCodes, code_key
from processors.email.suppressions import COLLECTION as SUPPRESSIONS
from processors.email.suppressions import SuppressionReason, Suppressions
from processors.erasure import Eraser
from processors.store import Document
from tests.processors.ads.conftest import make_job

pytestmark = pytest.mark.integration

MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")
ADA = "ada@example.com"
BOB = "bob@example.com"
NADA = "nada@example.com"  # contains ADA: must stay
# Whether a stored string names ADA (in any case), and not as the tail of another address.
NAMES_ADA = re.compile(r"(?<![\w.+-])ada@example\.com(?![\w.-])", re.IGNORECASE)


@pytest.fixture
async def database() -> AsyncIterator[AsyncDatabase[Document]]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(MONGODB_URL, tz_aware=True)
    name = f"test_erasure_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


def email(to: str) -> dict[str, Any]:
    return {
        "from": "Acme <no-reply@example.com>",
        "to": [to],
        "subject": "Your code",
        "html": "",
        "text": "1",
    }


def event(email_id: str, now: datetime) -> DeliveryEvent:
    return DeliveryEvent(
        event_id=f"evt-{email_id}",
        kind=EventKind.DELIVERED,
        resend_type="email.delivered",
        email_id=email_id,
        recipients=(),
        occurred_at=now,
        received_at=now,
    )


def copy() -> GeneratedCopy:
    return GeneratedCopy(
        variants=[
            AdVariant(headline="Glare-free light", body="No flicker. Folds flat.", call_to_action=None)
        ],
        model="gpt-fake",
        token_usage=TokenUsage(input_tokens=100, output_tokens=40, total_tokens=140),
        model_calls=1,
        elapsed_ms=850,
    )


class Seeded:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self.database = database
        self.ledger = DeliveryLedger(database["email_deliveries"], lease_s=30)
        self.events = DeliveryEvents(database)
        self.codes = LatestCodes(database)
        self.ads = AdStore(database["ads"])
        self.suppressions = Suppressions(database[SUPPRESSIONS], refresh_s=30)
        self.now = datetime.now(UTC)
        self.ad_jobs: dict[str, list[str]] = {}

    async def send(self, job_id: str, to: str, *, retried: bool = False) -> None:
        claim = await self.ledger.claim(job_id=job_id, email_type="SEND_OTP", recipient=to, now=self.now)
        attempt = claim.attempt
        if retried:
            await self.ledger.mark_failed(
                job_id=job_id, attempt=attempt, error_class="ProviderError", permanent=False, now=self.now
            )
            attempt = (
                await self.ledger.claim(job_id=job_id, email_type="SEND_OTP", recipient=to, now=self.now)
            ).attempt
        await self.ledger.mark_sent(
            job_id=job_id,
            attempt=attempt,
            provider="resend",
            provider_message_id=f"msg-{job_id}",
            now=self.now,
        )
        await self.events.record(event(f"msg-{job_id}", self.now), self.now)
        issued_ms = int(self.now.timestamp() * 1000) - 60_000
        await self.codes.record_sent(code_key(to, "sign-in"), issued_ms, job_id, self.now)

    async def send_batch(self, batch_id: str, members: dict[str, str]) -> None:
        for job_id, to in members.items():
            await self.ledger.claim(job_id=job_id, email_type="WELCOME_EMAIL", recipient=to, now=self.now)
        batch = RecordedBatch(
            batch_id=batch_id,
            idempotency_key=f"batch-{batch_id}",
            members=tuple(members),
            emails=tuple(email(to) for to in members.values()),
            at=self.now,
        )
        await self.ledger.record_batch(batch, attempts=dict.fromkeys(members, 1))
        for job_id in members:
            await self.ledger.mark_sent(
                job_id=job_id, attempt=1, provider="resend", provider_message_id=f"msg-{job_id}", now=self.now
            )

    async def ad(self, notify: str, *, succeeded: bool = True) -> str:
        job = make_job(notify={"email": notify, "live": False})
        await self.ads.claim(job, now=self.now, lease_s=60)
        if succeeded:
            await self.ads.mark_succeeded(job.job_id, copy(), now=self.now)
        return job.job_id

    async def close(self) -> None:
        await self.ledger.aclose()
        await self.events.aclose()
        await self.codes.aclose()
        await self.ads.aclose()


@pytest.fixture
async def seeded(database: AsyncDatabase[Document]) -> AsyncIterator[Seeded]:
    seeded = Seeded(database)
    await seeded.send("a-1", ADA)
    await seeded.send("a-2", "Ada@Example.com", retried=True)  # another spelling, two attempts
    await seeded.send("b-1", BOB)
    await seeded.send("n-1", NADA)
    await seeded.send_batch("batch-mixed", {"a-3": ADA, "b-2": BOB})
    await seeded.send_batch("batch-bob", {"b-3": BOB, "n-2": NADA})
    seeded.ad_jobs = {
        ADA: [await seeded.ad(ADA), await seeded.ad("ADA@example.com", succeeded=False)],
        BOB: [await seeded.ad(BOB)],
    }
    for address in (ADA, BOB):
        await seeded.suppressions.add(address, reason=SuppressionReason.BOUNCED, source="evt", now=seeded.now)
    yield seeded
    await seeded.close()


def strings(value: Any) -> Iterator[str]:
    """Every string in a stored document, the emails of a recorded batch decompressed."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(json.loads(zlib.decompress(item)) if key == "emails_zlib" else item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


async def stored_strings(database: AsyncDatabase[Document]) -> list[str]:
    found: list[str] = []
    for name in await database.list_collection_names():
        for doc in await database[name].find({}).to_list():
            found += strings(doc)
    return found


async def test_erase_removes_every_trace_of_the_address_and_nothing_else(
    database: AsyncDatabase[Document], seeded: Seeded
) -> None:
    before = await stored_strings(database)
    assert any(NAMES_ADA.search(s) for s in before)
    ledger_docs = {
        name: await database[name].count_documents({"job_id": {"$in": ["a-1", "a-2", "a-3"]}})
        for name in await database.list_collection_names()
        if re.fullmatch(r"email_deliveries_\d{8}", name)
    }
    eraser = Eraser(database, suppressions=seeded.suppressions, events=seeded.events)

    erased = await eraser.erase(" ADA@example.COM ")

    assert erased.email_jobs == ["a-1", "a-2", "a-3"]
    assert sorted(erased.ad_jobs) == sorted(seeded.ad_jobs[ADA])
    after = await stored_strings(database)
    assert [s for s in after if NAMES_ADA.search(s)] == []
    assert code_key(ADA, "sign-in") not in after
    assert not {"msg-a-1", "msg-a-2", "msg-a-3", "a-1", "a-2", "a-3"} & set(after)
    # The whole batch goes, though it held Bob's email too: its emails are one blob, and a
    # repeated batch key must carry the very same emails. Bob's job was sent already.
    assert await seeded.ledger.batches.get("batch-mixed", at=seeded.now) is None
    # The counts, by collection.
    day = seeded.ledger.batches.buckets.name(seeded.ledger.batches.buckets.period(seeded.now))
    assert {name: erased.deleted[name] for name in ledger_docs} == ledger_docs
    assert sum(ledger_docs.values()) >= 3 * 3  # each job: its claim, in two buckets, and its completion
    assert erased.deleted[day] == 1  # the mixed batch
    assert erased.deleted["email_delivery_events_*"] == 2  # a-1, a-2 (the batch got none)
    assert erased.deleted["ads"] == 1
    assert erased.deleted["email_suppressions"] == 1
    assert erased.total == sum(erased.deleted.values())


async def test_the_other_addresses_keep_everything(database: AsyncDatabase[Document], seeded: Seeded) -> None:
    eraser = Eraser(database, suppressions=seeded.suppressions, events=seeded.events)

    await eraser.erase(ADA)

    reader = DeliveryLedger(database["email_deliveries"], lease_s=30)  # reads the store, no memo
    entries = {entry["job_id"]: entry for entry in await reader.entries()}
    assert sorted(entries) == ["b-1", "b-2", "b-3", "n-1", "n-2"]
    assert {entry["status"] for entry in entries.values()} == {Status.SENT.value}
    assert entries["b-1"]["provider_message_id"] == "msg-b-1"
    assert await reader.batches.get("batch-bob", at=seeded.now) is not None
    assert set(await seeded.events.for_email_ids(["msg-b-1", "msg-n-1"])) == {"msg-b-1", "msg-n-1"}
    assert await seeded.ads.get(seeded.ad_jobs[BOB][0]) is not None
    assert [entry.address for entry in await seeded.suppressions.entries()] == [BOB]
    after = await stored_strings(database)
    assert code_key(BOB, "sign-in") in after
    assert code_key(NADA, "sign-in") in after
    await reader.aclose()


async def test_erasing_again_finds_nothing(database: AsyncDatabase[Document], seeded: Seeded) -> None:
    eraser = Eraser(database, suppressions=seeded.suppressions, events=seeded.events)
    await eraser.erase(ADA)

    again = await eraser.erase(ADA)

    assert (again.total, again.email_jobs, again.ad_jobs) == (0, [], [])


async def test_an_old_ad_copy_is_found_after_its_claims_are_gone(
    database: AsyncDatabase[Document], seeded: Seeded
) -> None:
    # The copy in `ads` outlives its claims' buckets (dropped after two days).
    for name in await database.list_collection_names():
        if name.startswith("ads_claims_"):
            await database.drop_collection(name)
    eraser = Eraser(database, suppressions=seeded.suppressions, events=seeded.events)

    erased = await eraser.erase(ADA)

    assert erased.ad_jobs == [seeded.ad_jobs[ADA][0]]
    assert erased.deleted["ads"] == 1


async def test_only_an_address_can_be_erased(database: AsyncDatabase[Document], seeded: Seeded) -> None:
    eraser = Eraser(database, suppressions=seeded.suppressions, events=seeded.events)

    with pytest.raises(ValueError, match="not an email address"):
        await eraser.erase("ada")
