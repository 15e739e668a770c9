"""Erasing one email address from the store (`python -m streams.cli erase --email ADDRESS`).

What goes, in the database given:

- the delivery ledger: every document of every email job whose `recipient` is the address
  (`email_deliveries_<day>`: claims, anchors, releases, notes and completions, found by
  the claims' `recipient`, deleted by `job_id`);
- the recorded batches (`email_deliveries_batches_<day>`) that hold one of those jobs or
  an email to the address: the whole batch document, since its emails are one compressed
  blob and Resend only accepts a repeated batch key with the very same payload;
- the sent-code records of those jobs (`email_codes_<hour>`: a hash of the address);
- Resend's delivery events of the emails those jobs sent (by `provider_message_id`);
- the ad copies (`ads`) and ad claims (`ads_claims_<day>`) of jobs that asked to notify
  the address (`request.notify.email`);
- the address's suppression entry.

Addresses match without regard to case. A job in flight for the address while this runs
may write again: erase once nothing more is sent to it, or run it again. It is safe to
repeat. Every query scans its collection on FerretDB v1; erasure is rare, so that is fine.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from processors.buckets import DAY_S, TimeBuckets
from processors.email.supersession import HOUR_S
from processors.store import Document, guard_store

LEDGER = "email_deliveries"
BATCHES = f"{LEDGER}_batches"
CODES = "email_codes"
CODES_BUCKET_S = HOUR_S
ADS = "ads"
AD_CLAIMS = f"{ADS}_claims"
IDS_PER_CALL = 500
"""Job ids in one `$in`: a query stays a modest size however many jobs the address had."""

_NAMED_ADDRESS = re.compile(r"[^<>]*<\s*([^<>]+?)\s*>\s*")


class SuppressionList(Protocol):
    async def remove(self, address: str) -> bool: ...


class EventStore(Protocol):
    async def erase(self, email_ids: Iterable[str]) -> int: ...


@dataclass
class Erased:
    """What `Eraser.erase` deleted: documents by collection, and the jobs they belonged to."""

    email_jobs: list[str] = field(default_factory=list)
    ad_jobs: list[str] = field(default_factory=list)
    deleted: dict[str, int] = field(default_factory=dict)
    """Documents deleted, by collection (every collection searched, zeros included)."""

    @property
    def total(self) -> int:
        return sum(self.deleted.values())

    def add(self, collection: str, count: int) -> None:
        self.deleted[collection] = self.deleted.get(collection, 0) + count


def bare_address(address: str) -> str:
    """`" Ada <Ada@Example.com> "` -> `ada@example.com`."""
    named = _NAMED_ADDRESS.fullmatch(address)
    return (named.group(1) if named else address).strip().lower()


class Eraser:
    def __init__(
        self,
        database: AsyncDatabase[Document],
        *,
        suppressions: SuppressionList,
        events: EventStore,
        events_name: str = "email_delivery_events_*",
        suppressions_name: str = "email_suppressions",
    ) -> None:
        self._database = database
        self._suppressions = suppressions
        self._events = events
        self._events_name = events_name
        self._suppressions_name = suppressions_name

    async def erase(self, address: str) -> Erased:
        address = bare_address(address)
        if "@" not in address:
            raise ValueError("not an email address")
        erased = Erased()
        matches = {"$regex": f"^{re.escape(address)}$", "$options": "i"}
        email_jobs = await self._job_ids(LEDGER, "insert.recipient", matches)
        erased.email_jobs = sorted(email_jobs)
        ledger_docs = await self._erase_jobs(LEDGER, email_jobs, erased)
        batch_ids = {doc["data"]["batch_id"] for doc in ledger_docs if _is_batch_note(doc)}
        message_ids = {
            doc["data"]["provider_message_id"]
            for doc in ledger_docs
            if isinstance((doc.get("data") or {}).get("provider_message_id"), str)
        }
        await self._erase_batches(address, email_jobs, batch_ids, erased)
        await self._erase_codes(email_jobs, erased)
        erased.add(self._events_name, await self._events.erase(sorted(message_ids)))
        ad_jobs = await self._ad_ids(matches) | await self._job_ids(
            AD_CLAIMS, "fields.request.notify.email", matches
        )
        erased.ad_jobs = sorted(ad_jobs)
        erased.add(ADS, await self._delete(self._database[ADS], "_id", ad_jobs))
        await self._erase_jobs(AD_CLAIMS, ad_jobs, erased)
        erased.add(self._suppressions_name, int(await self._suppressions.remove(address)))
        return erased

    # ------------------------------------------------------------------ parts

    async def _job_ids(self, prefix: str, path: str, matches: Document) -> set[str]:
        """Ids of the jobs with a document whose `path` matches, in every bucket of `prefix`."""
        found: set[str] = set()
        for collection in await self._buckets(prefix):
            docs = await _find(collection, {path: matches}, {"job_id": 1})
            found.update(doc["job_id"] for doc in docs)
        return found

    async def _ad_ids(self, matches: Document) -> set[str]:
        docs = await _find(self._database[ADS], {"request.notify.email": matches}, {"_id": 1})
        return {doc["_id"] for doc in docs}

    async def _erase_jobs(self, prefix: str, job_ids: set[str], erased: Erased) -> list[Document]:
        """Delete every document of `job_ids` in the buckets of `prefix`; the documents deleted."""
        deleted: list[Document] = []
        for collection in await self._buckets(prefix):
            docs: list[Document] = []
            for chunk in _chunks(job_ids):
                docs += await _find(collection, {"job_id": {"$in": chunk}}, {"kind": 1, "data": 1})
            erased.add(collection.name, await self._delete(collection, "job_id", job_ids))
            deleted += docs
        return deleted

    async def _erase_batches(
        self, address: str, job_ids: set[str], batch_ids: set[str], erased: Erased
    ) -> None:
        for collection in await self._buckets(BATCHES):
            doomed: set[str] = set()
            # One by one: a day of batches can be gigabytes of compressed emails.
            async for doc in collection.find({}, {"members": 1, "emails_zlib": 1}, batch_size=100):
                if _batch_holds(doc, address, job_ids, batch_ids):
                    doomed.add(doc["_id"])
            erased.add(collection.name, await self._delete(collection, "_id", doomed))

    async def _erase_codes(self, job_ids: set[str], erased: Erased) -> None:
        """The sent-code records (`<key>:<issued_at_ms>:<job_id>`) of the jobs, and every other
        record of their keys: a key is a hash of the address."""
        for collection in await self._buckets(CODES, bucket_s=CODES_BUCKET_S):
            docs = await _find(collection, {}, {"key": 1})
            keys = {doc["key"] for doc in docs if str(doc["_id"]).rpartition(":")[2] in job_ids}
            erased.add(collection.name, await self._delete(collection, "key", keys))

    async def _buckets(self, prefix: str, *, bucket_s: int = DAY_S) -> list[AsyncCollection[Document]]:
        buckets = TimeBuckets(self._database, prefix, bucket_s=bucket_s)
        return [buckets.collection(p) for p in await guard_store(buckets.existing)]

    @staticmethod
    async def _delete(collection: AsyncCollection[Document], path: str, values: Iterable[str]) -> int:
        count = 0
        for chunk in _chunks(values):
            result = await guard_store(functools.partial(collection.delete_many, {path: {"$in": chunk}}))
            count += result.deleted_count
        return count


async def _find(
    collection: AsyncCollection[Document], query: Document, projection: Document
) -> list[Document]:
    return await guard_store(lambda: collection.find(query, projection).to_list())


def _chunks(values: Iterable[str]) -> list[list[str]]:
    ordered = sorted(set(values))
    return [ordered[i : i + IDS_PER_CALL] for i in range(0, len(ordered), IDS_PER_CALL)]


def _is_batch_note(doc: Document) -> bool:
    return doc.get("kind") == "note" and isinstance((doc.get("data") or {}).get("batch_id"), str)


def _batch_holds(doc: Document, address: str, job_ids: set[str], batch_ids: set[str]) -> bool:
    if doc["_id"] in batch_ids or job_ids & set(doc.get("members") or ()):
        return True
    return address in _batch_recipients(doc)


def _batch_recipients(doc: Document) -> set[str]:
    try:
        emails: Sequence[Any] = json.loads(zlib.decompress(doc["emails_zlib"]))
    except (KeyError, zlib.error, ValueError):
        return set()
    recipients: set[str] = set()
    for email in emails:
        to = email.get("to") if isinstance(email, dict) else None
        for item in [to] if isinstance(to, str) else to if isinstance(to, list) else []:
            if isinstance(item, str):
                recipients.add(bare_address(item))
    return recipients
