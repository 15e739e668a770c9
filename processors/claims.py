"""Claims with a lease: one worker at a time works on a job, and a done job stays done.

A worker claims a job before work that must happen once (sending an email, calling a
model):

- the first claim of a job takes attempt 1;
- a later claim takes the next attempt when the last one was released (`retrying` or
  `failed`) or its lease expired (the holder died), and counts it;
- a finished job is not claimed again: the caller answers from its document. It
  finished in the *done* status, or in another final one its caller chose (`finish(...,
  status=...)`, say a job that failed for good);
- while another worker's lease is live, the claim raises `TransientError` (ClaimHeld)
  with the time left on the lease, so the message comes back later instead of being
  dropped.

**Storage: inserts only, in time buckets.** FerretDB v1 serves no query from an index
(on SQLite even a filter on `_id` alone is checked row by row), so every read or update
costs a scan of its collection, while an insert only checks the unique `_id` index. So
the hot path is made of inserts, whose `_id` says what they decide:

- `<job>`: the claim of attempt 1; `<job>#<n>`: the claim of attempt n (the unique `_id`
  lets exactly one worker take an attempt);
- `<job>#<n>!`: attempt n released (`retrying`/`failed`); `<job>!`: the job done;
- `<job>#<n>~`: a note on attempt n, written before acting (`note`): say, how an email
  is about to be sent, so that the next attempt repeats exactly that.

A job's documents live in collections bucketed by time (`processors.buckets`): a claim
goes into the bucket of the current period *and* the previous one (previous first), so
a job claimed during the last period (at least `bucket_s` ago) collides with its
earlier claim; releases and completions go into the current bucket. Buckets older than
two periods are dropped, which is the retention. A claim is therefore recognised for at
least `bucket_s` (a day by default; Resend keeps an idempotency key as long).

A new job costs two inserts, its outcome one; `Batcher`s turn the concurrent jobs' calls
into one `insert_many(ordered=False)` per bucket. Only a claim whose insert collides
reads the job's documents (`find` by `job_id` in the two buckets, again batched), and an
in-process memo of what this worker wrote or read spares most of those reads: a job
this worker released is retried by inserting its next attempt; one it finished is
answered from memory. The memo only ever proposes an attempt: the insert decides.

The stores shape the result: `document` views merge a job's documents into one
(`_id`, `job_id`, the claim's fields, `status`, `attempts`, `lease_until` while working,
`created_at`, `updated_at`, `history`, and what the release or completion recorded).
Uses only `insert_many(ordered=False)`, `find`, `create_index`, `list_collection_names`
and `drop_collection`, so it runs on FerretDB v1 as on MongoDB.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from processors.batching import Batcher
from processors.buckets import DAY_S, Rotation, TimeBuckets
from processors.errors import TransientError
from processors.store import Document, as_stored, aware, guard_store, insert_each

log = logging.getLogger(__name__)

RETRYING = "retrying"
"""A transient failure released the job: any worker may claim it at once."""
FAILED = "failed"
"""A permanent failure released the job: a redelivery (a replay) may claim it again. (A
store whose failures are final records them with `finish(..., status=...)` instead.)"""

# Fields of the merged document that the claim itself owns; a store's fields must not use them.
PROTOCOL_FIELDS = frozenset(
    {"_id", "job_id", "status", "attempts", "lease_until", "created_at", "updated_at", "history", "notes"}
)
# The documents changed between two calls of one claim: look again soon.
_RACE_RETRY_AFTER_MS = 100
# Buckets read for a job: the current period's and the previous one's.
_WINDOW = 2
# Buckets kept: the window and one more, for workers whose clocks lag.
_KEEP = _WINDOW + 1

_CLAIM = "claim"
_SEEN = "seen"  # the job's anchor in a bucket, written by a claim of attempt >= 2
_RELEASE = "release"
_DONE = "done"
_NOTE = "note"


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    ALREADY_DONE = "already_done"


@dataclass(frozen=True)
class Claim:
    """What a claim got: the job (`CLAIMED`) or the news that it is done (`ALREADY_DONE`).

    `attempt` counts the claims of the job so far; `document` is the job's merged
    document after the claim.
    """

    outcome: ClaimOutcome
    attempt: int
    document: Document


@dataclass(frozen=True)
class BatchSettings:
    """How store calls are coalesced (see `processors.batching`)."""

    max_batch: int = 256
    insert_delay_s: float = 0.002
    inserts_in_flight: int = 2
    read_delay_s: float = 0.005
    reads_in_flight: int = 1


@dataclass
class _Known:
    """What this worker knows of one job: documents it wrote or read, and its own part."""

    docs: dict[tuple[str, str], Document] = field(default_factory=dict)  # by (kind, _id)
    anchored: set[int] = field(default_factory=set)  # periods whose bucket holds the job's anchor
    mine: int | None = None  # the attempt this worker holds
    abandoned: int | None = None  # an attempt this worker took (or may have) but will not work on

    def add(self, doc: Document) -> None:
        self.docs[(doc["kind"], doc["_id"])] = doc


@dataclass(frozen=True)
class _State:
    kind: Literal["empty", "done", "held", "free", "expired"]
    attempt: int = 0  # done: attempts so far; held: the attempt held; free, expired: the attempt to take
    lease_until: datetime | None = None


class Claims:
    """Claims on the jobs whose documents live in the buckets named after `collection`.

    `working` is the status of a claimed job, `done` the final status of a finished one.
    The buckets are `<collection name>_<period>` in `collection`'s database.
    """

    def __init__(
        self,
        collection: AsyncCollection[Document],
        *,
        working: str,
        done: str,
        bucket_s: int = DAY_S,
        memo_size: int = 10_000,
        batching: BatchSettings | None = None,
        index_job_id: bool = True,
    ) -> None:
        if len({working, done, RETRYING, FAILED}) != 4:
            raise ValueError(f"the statuses must differ: {working!r}, {done!r}, {RETRYING!r}, {FAILED!r}")
        self.working = working
        self.done = done
        self.buckets = TimeBuckets(collection.database, collection.name, bucket_s=bucket_s)
        self._name = collection.name
        self._batching = batching or BatchSettings()
        self._index_job_id = index_job_id
        self._memo: OrderedDict[str, _Known] = OrderedDict()
        self._memo_size = memo_size
        self._inserters: dict[int, Batcher[Document, None]] = {}
        self._readers: dict[int, Batcher[str, list[Document]]] = {}
        self._rotation = Rotation(self.buckets, ensure=self._ensure, expire=self._expire)
        self.loads = 0
        """How many times a job's documents were read from the store (claims that collided)."""

    # ------------------------------------------------------------------ the protocol

    async def claim(
        self,
        job_id: str,
        *,
        now: datetime,
        lease_s: float,
        fields: Document | None = None,
        on_insert: Document | None = None,
    ) -> Claim:
        """Take the right to work on `job_id` until `now + lease_s`, or say it is already done.

        `fields` are recorded by every claim (the latest claim's win); `on_insert` by
        every claim too, but the document shows the first claim's.

        Raises `TransientError`: `ClaimHeld` while another worker's lease is live, with
        `retry_after_ms` the time left on it; `ClaimRace` when the documents changed
        during the claim.
        """
        fields = dict(fields or {})
        on_insert = dict(on_insert or {})
        clashing = PROTOCOL_FIELDS & (fields.keys() | on_insert.keys())
        if clashing:
            raise ValueError(f"fields owned by the claim: {sorted(clashing)}")
        if "#" in job_id or "!" in job_id:
            raise ValueError("a job id must not contain '#' or '!'")
        period = await self._enter(now)
        lease_until = now + timedelta(seconds=lease_s)
        taking = _Taking(job_id, period, now, lease_until, fields, on_insert)
        known = self._recall(job_id)
        if known is not None and known.docs:
            state = self._state(known, now)
            if state.kind == "done":
                return Claim(ClaimOutcome.ALREADY_DONE, state.attempt, self._view(job_id, known))
            if state.kind == "free":
                return await self._take(taking, state.attempt, known, look_again=True)
            if state.kind == "held" and known.mine == state.attempt:
                raise self._held(state, now)
            # Another worker's lease, or an expired one, as last seen: look again.
            return await self._reconsider(taking, look_again=True)
        doc = self._claim_doc(taking, 1)
        try:
            await self._insert_pair(period, doc)
        except DuplicateKeyError:
            return await self._reconsider(taking, look_again=True)
        except BaseException:
            # Whether or not it was stored, this worker will not work on attempt 1: if it
            # was, a retry takes attempt 2 at once instead of waiting out the lease.
            self._remember(job_id, _Known(abandoned=1))
            raise
        known = _Known(anchored={period - 1, period}, mine=1)
        known.add(doc)
        self._remember(job_id, known)
        return Claim(ClaimOutcome.CLAIMED, 1, self._view(job_id, known))

    async def release(
        self,
        job_id: str,
        *,
        status: str,
        now: datetime,
        attempt: int | None = None,
        data: Document | None = None,
        note: Document | None = None,
    ) -> None:
        """Give up attempt `attempt` (by default the one this worker holds, else the latest)
        with `status` `retrying` or `failed`, so that the next claim may take the job at once.

        `data` shows in the document while this is the job's state; `note` goes into its
        history entry. A job that is done stays done; an attempt released twice keeps its
        first release.
        """
        if status not in (RETRYING, FAILED):
            raise ValueError(f"a release is {RETRYING!r} or {FAILED!r}, not {status!r}")
        period = await self._enter(now)
        known = self._recall(job_id)
        if attempt is None and (known is None or known.mine is None):
            known = await self._load(job_id, period)
        if known is not None and self._state(known, now).kind == "done":
            return
        if attempt is None:
            attempt = await self._current_attempt(job_id, period, known)
            if attempt is None:
                return  # never claimed
        doc: Document = as_stored(
            {
                "_id": f"{job_id}#{attempt}!",
                "job_id": job_id,
                "kind": _RELEASE,
                "attempt": attempt,
                "status": status,
                "at": now,
                "data": dict(data or {}),
                "note": dict(note or {}),
            }
        )
        try:
            await self._insert(period, doc)
        except DuplicateKeyError:
            return
        if known is not None:
            known.add(doc)
            if known.mine == attempt:
                known.mine = None

    async def note(self, job_id: str, *, attempt: int, now: datetime, data: Document) -> None:
        """Record `data` about `attempt` before acting on it; the job's document lists its
        notes under `notes` (`attempt`, `at` and `data`'s fields), oldest first.

        One note per attempt: a second one raises `DuplicateKeyError`. A store error
        raises too, and then the caller must not act, since the note may be missing.
        """
        period = await self._enter(now)
        doc: Document = as_stored(
            {
                "_id": f"{job_id}#{attempt}~",
                "job_id": job_id,
                "kind": _NOTE,
                "attempt": attempt,
                "at": now,
                "data": dict(data),
            }
        )
        await self._insert(period, doc)
        known = self._recall(job_id)
        if known is not None:
            known.add(doc)

    async def finish(
        self,
        job_id: str,
        *,
        now: datetime,
        attempt: int | None = None,
        data: Document | None = None,
        note: Document | None = None,
        status: str | None = None,
    ) -> bool:
        """Record the job as done by `attempt` (by default the one this worker holds, else
        the latest), with `data` for its document. False if it was done already: the first
        completion stays.

        `status` is the job's final status in its document: the `done` status by default,
        or another terminal one (say, a job that failed for good); any of them ends the
        job, which is never claimed again (`ClaimOutcome.ALREADY_DONE`).
        """
        status = self._final_status(status)
        period = await self._enter(now)
        known = self._recall(job_id)
        if known is not None and self._state(known, now).kind == "done":
            return False
        if attempt is None:
            attempt = await self._current_attempt(job_id, period, known) or 1
        doc = self._done_doc(job_id, now=now, attempt=attempt, data=data, note=note, status=status)
        try:
            await self._insert(period, doc)
        except DuplicateKeyError:
            self._memo.pop(job_id, None)  # the stored completion is another one: read it when asked
            return False
        if known is not None:
            known.add(doc)
            known.mine = None
        return True

    async def document(self, job_id: str, *, now: datetime) -> Document | None:
        """The job's merged document as this worker knows it, or as stored if it knows too little."""
        known = self._recall(job_id)
        if known is None or not any(kind == _CLAIM for kind, _ in known.docs):
            period = await self._enter(now)
            known = await self._load(job_id, period)
        return self._view(job_id, known) if known.docs else None

    async def finished_view(
        self,
        job_id: str,
        *,
        now: datetime,
        data: Document,
        note: Document | None = None,
        status: str | None = None,
    ) -> Document | None:
        """The job's merged document as it will read once `finish(job_id, now=now, data=data,
        note=note, status=status)` has stored it (nothing is stored); None if the job has no
        documents."""
        status = self._final_status(status)
        known = self._recall(job_id)
        if known is None or not any(kind == _CLAIM for kind, _ in known.docs):
            known = await self._load(job_id, await self._enter(now))
        if not known.docs:
            return None
        preview = _Known(docs=dict(known.docs))
        attempt = known.mine or max(d["attempt"] for d in known.docs.values())
        preview.add(self._done_doc(job_id, now=now, attempt=attempt, data=data, note=note, status=status))
        return self._view(job_id, preview)

    async def get(self, job_id: str) -> Document | None:
        """The job's merged document from every bucket there is (for operators and tests)."""
        periods = await guard_store(self.buckets.existing)
        found = await asyncio.gather(
            *(guard_store(functools.partial(self._find, p, {"job_id": job_id})) for p in periods)
        )
        known = _Known()
        for docs in found:
            for doc in docs:
                known.add(doc)
        return self._view(job_id, known) if known.docs else None

    async def entries(self) -> list[Document]:
        """Every job's merged document, from every bucket there is (for operators and tests)."""
        by_job: dict[str, _Known] = defaultdict(_Known)
        for period in await guard_store(self.buckets.existing):
            for doc in await guard_store(functools.partial(self._find, period, {})):
                by_job[doc["job_id"]].add(doc)
        return [self._view(job_id, known) for job_id, known in sorted(by_job.items())]

    async def documents(self) -> list[Document]:
        """Every stored document, as stored, from every bucket (for tests that search them)."""
        stored: list[Document] = []
        for period in await guard_store(self.buckets.existing):
            stored += await guard_store(functools.partial(self._find, period, {}))
        return stored

    async def prepare(self, now: datetime) -> list[str]:
        """Create the current buckets (and their `job_id` index) and drop expired ones; the
        names of the buckets dropped. The worker calls it at start; claims do the same on
        their own when a new period begins."""
        return await self._rotation.prepare(now)

    async def aclose(self) -> None:
        """Wait for the bulk calls still running."""
        for inserter in list(self._inserters.values()):
            await inserter.aclose()
        for reader in list(self._readers.values()):
            await reader.aclose()

    # ------------------------------------------------------------------ deciding

    def _state(self, known: _Known, now: datetime) -> _State:
        docs = known.docs.values()
        if not docs:
            return _State("empty")
        claims = {d["attempt"]: d for d in docs if d["kind"] == _CLAIM}
        attempts = [d["attempt"] for d in docs]
        if any(d["kind"] == _DONE for d in docs):
            return _State("done", max(claims, default=max(attempts)))
        released = {d["attempt"] for d in docs if d["kind"] == _RELEASE}
        if known.abandoned is not None:
            released.add(known.abandoned)
        latest = max([*attempts, *released])
        if latest in released:
            return _State("free", latest + 1)
        if latest not in claims:
            # Anchored for `latest` but not claimed (yet): its claimer died or is on its way;
            # the insert will tell.
            return _State("free", latest)
        lease_until = aware(claims[latest]["lease_until"])
        if lease_until >= now:
            return _State("held", latest, lease_until)
        # The holder's lease ran out. Unlike a release, this says nothing of what the
        # holder did since, so it is only acted on when just read from the store.
        return _State("expired", latest + 1, lease_until)

    def _held(self, state: _State, now: datetime) -> TransientError:
        assert state.lease_until is not None
        remaining_ms = max(1, int((state.lease_until - now).total_seconds() * 1000))
        return TransientError(
            f"another worker is {self.working} this job", error_class="ClaimHeld", retry_after_ms=remaining_ms
        )

    def _race(self, what: str) -> TransientError:
        return TransientError(
            f"{self._name} documents {what} during the claim",
            error_class="ClaimRace",
            retry_after_ms=_RACE_RETRY_AFTER_MS,
        )

    async def _reconsider(self, taking: _Taking, *, look_again: bool) -> Claim:
        """The job has documents: read them and decide."""
        known = await self._load(taking.job_id, taking.period)
        state = self._state(known, taking.now)
        if state.kind == "done":
            return Claim(ClaimOutcome.ALREADY_DONE, state.attempt, self._view(taking.job_id, known))
        if state.kind == "held":
            raise self._held(state, taking.now)
        if state.kind in ("free", "expired") and look_again:
            return await self._take(taking, state.attempt, known, look_again=False)
        # Nothing there (the colliding document is in a bucket not read: another worker's
        # clock is a period ahead), or a second collision in a row.
        raise self._race("changed" if known.docs else "vanished")

    async def _take(self, taking: _Taking, attempt: int, known: _Known, *, look_again: bool) -> Claim:
        """Claim `attempt` of a job that has documents already."""
        job_id, period = taking.job_id, taking.period
        if attempt > 1:
            # The job's anchor (`<job>`) must be in both buckets, so that a claim without
            # the memo collides with it and does not take attempt 1 again.
            missing = sorted({period - 1, period} - known.anchored)
            seen: Document = as_stored(
                {"_id": job_id, "job_id": job_id, "kind": _SEEN, "attempt": attempt, "at": taking.now}
            )
            outcomes = await asyncio.gather(
                *(self._insert(p, dict(seen)) for p in missing), return_exceptions=True
            )
            for p, outcome in zip(missing, outcomes, strict=True):
                if outcome is None or isinstance(outcome, DuplicateKeyError):
                    known.anchored.add(p)
                elif isinstance(outcome, BaseException):
                    raise outcome
        doc = self._claim_doc(taking, attempt)
        try:
            await self._insert_pair(period, doc)
        except DuplicateKeyError:
            if look_again:
                return await self._reconsider(taking, look_again=False)
            raise self._race("changed") from None
        except BaseException:
            known.abandoned = max(attempt, known.abandoned or 0)
            self._remember(job_id, known)
            raise
        known.add(doc)
        known.mine = attempt
        known.abandoned = None
        known.anchored |= {period - 1, period}
        self._remember(job_id, known)
        return Claim(ClaimOutcome.CLAIMED, attempt, self._view(job_id, known))

    async def _current_attempt(self, job_id: str, period: int, known: _Known | None) -> int | None:
        if known is not None and known.mine is not None:
            return known.mine
        if known is None or not known.docs:
            known = await self._load(job_id, period)
        claims = [d["attempt"] for d in known.docs.values() if d["kind"] == _CLAIM]
        return max(claims, default=None)

    def _final_status(self, status: str | None) -> str:
        if status is None:
            return self.done
        if status in (self.working, RETRYING):
            raise ValueError(f"{status!r} is not a final status")
        return status

    def _done_doc(
        self,
        job_id: str,
        *,
        now: datetime,
        attempt: int,
        data: Document | None,
        note: Document | None,
        status: str,
    ) -> Document:
        return as_stored(
            {
                "_id": f"{job_id}!",
                "job_id": job_id,
                "kind": _DONE,
                "attempt": attempt,
                "status": status,
                "at": now,
                "data": dict(data or {}),
                "note": dict(note or {}),
            }
        )

    def _claim_doc(self, taking: _Taking, attempt: int) -> Document:
        return as_stored(
            {
                "_id": taking.job_id if attempt == 1 else f"{taking.job_id}#{attempt}",
                "job_id": taking.job_id,
                "kind": _CLAIM,
                "attempt": attempt,
                "at": taking.now,
                "lease_until": taking.lease_until,
                "insert": dict(taking.on_insert),
                "fields": dict(taking.fields),
            }
        )

    def _view(self, job_id: str, known: _Known) -> Document:
        """One document for the job, merged from its stored ones."""
        docs = list(known.docs.values())
        claims = sorted((d for d in docs if d["kind"] == _CLAIM), key=lambda d: d["attempt"])
        releases = {d["attempt"]: d for d in docs if d["kind"] == _RELEASE}
        dones = sorted((d for d in docs if d["kind"] == _DONE), key=lambda d: (d["attempt"], aware(d["at"])))
        view: Document = {"_id": job_id, "job_id": job_id}
        if claims:
            view.update(claims[0].get("insert") or {})
            view.update(claims[-1].get("fields") or {})
        attempts = max(d["attempt"] for d in docs)
        lease_until = None
        if dones:
            status = dones[0].get("status") or self.done
            view.update(dones[0].get("data") or {})
        elif attempts in releases:
            status = releases[attempts]["status"]
            view.update(releases[attempts].get("data") or {})
        else:
            status = self.working
            if claims and claims[-1]["attempt"] == attempts:
                lease_until = claims[-1]["lease_until"]
        stamps = sorted((d["at"] for d in docs), key=aware)
        history = [
            {"attempt": d["attempt"], "at": d["at"], "outcome": d["status"], **(d.get("note") or {})}
            for d in sorted([*releases.values(), *dones[:1]], key=lambda d: (d["attempt"], aware(d["at"])))
        ]
        notes = [
            {"attempt": d["attempt"], "at": d["at"], **(d.get("data") or {})}
            for d in sorted((d for d in docs if d["kind"] == _NOTE), key=lambda d: d["attempt"])
        ]
        if notes:
            view["notes"] = notes
        view.update(
            status=status,
            attempts=attempts,
            created_at=claims[0]["at"] if claims else stamps[0],
            updated_at=stamps[-1],
            history=history,
        )
        if lease_until is not None:
            view["lease_until"] = lease_until
        return view

    # ------------------------------------------------------------------ memo

    def _recall(self, job_id: str) -> _Known | None:
        known = self._memo.get(job_id)
        if known is not None:
            self._memo.move_to_end(job_id)
        return known

    def _remember(self, job_id: str, known: _Known) -> None:
        if self._memo_size <= 0:
            return
        self._memo[job_id] = known
        self._memo.move_to_end(job_id)
        while len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)

    # ------------------------------------------------------------------ the store

    async def _load(self, job_id: str, period: int) -> _Known:
        """The job's documents in the two buckets of `period`, merged into what this worker knew."""
        periods = [period - 1, period]
        found = await asyncio.gather(
            *(guard_store(functools.partial(self._reader(p).submit, job_id)) for p in periods)
        )
        self.loads += 1
        known = self._memo.get(job_id) or _Known()  # after the read: another call may have added to it
        for p, docs in zip(periods, found, strict=True):  # the later bucket wins
            for doc in docs:
                known.add(doc)
                if doc["_id"] == job_id:
                    known.anchored.add(p)
        self._remember(job_id, known)
        return known

    async def _find(self, period: int, query: Document) -> list[Document]:
        return await self.buckets.collection(period).find(query).to_list()

    async def _insert(self, period: int, doc: Document) -> None:
        # Documents are built `as_stored`: the memo keeps exactly what a read would return.
        await guard_store(lambda: self._inserter(period).submit(doc))

    async def _insert_pair(self, period: int, doc: Document) -> None:
        """Insert a claim into the previous bucket, then into the current one."""
        await self._insert(period - 1, doc)
        await self._insert(period, dict(doc))

    def _inserter(self, period: int) -> Batcher[Document, None]:
        batcher = self._inserters.get(period)
        if batcher is None:
            collection = self.buckets.collection(period)
            settings = self._batching
            batcher = self._inserters[period] = Batcher(
                lambda docs: insert_each(collection, docs),
                max_batch=settings.max_batch,
                max_delay_s=settings.insert_delay_s,
                max_in_flight=settings.inserts_in_flight,
            )
        return batcher

    def _reader(self, period: int) -> Batcher[str, list[Document]]:
        batcher = self._readers.get(period)
        if batcher is None:
            collection = self.buckets.collection(period)

            async def find_jobs(job_ids: list[str]) -> list[list[Document]]:
                found = await collection.find({"job_id": {"$in": sorted(set(job_ids))}}).to_list()
                by_job: dict[str, list[Document]] = defaultdict(list)
                for doc in found:
                    by_job[doc["job_id"]].append(doc)
                return [by_job.get(job_id, []) for job_id in job_ids]

            settings = self._batching
            batcher = self._readers[period] = Batcher(
                find_jobs,
                max_batch=settings.max_batch,
                max_delay_s=settings.read_delay_s,
                max_in_flight=settings.reads_in_flight,
            )
        return batcher

    async def _enter(self, now: datetime) -> int:
        """The period of `now`; when a new period begins, prepare its bucket and drop expired ones."""
        return await self._rotation.enter(now)

    async def _ensure(self, period: int) -> None:
        if not self._index_job_id:
            return
        for p in (period - 1, period):
            # Real MongoDB serves the reads of a collided claim from it; FerretDB v1 uses no
            # index for queries, but keeps this one cheaply.
            await guard_store(functools.partial(self.buckets.collection(p).create_index, "job_id"))

    async def _expire(self, period: int) -> list[str]:
        # Never by a clock ahead of this machine's: a `now` far in the future must not
        # drop the buckets that are still in use.
        oldest_kept = min(period, self.buckets.period(datetime.now(UTC))) - _KEEP + 1
        for old in [p for p in (*self._inserters, *self._readers) if p < oldest_kept]:
            self._inserters.pop(old, None)
            self._readers.pop(old, None)
        dropped = await guard_store(lambda: self.buckets.drop_before(oldest_kept))
        if dropped:
            log.info("dropped expired buckets %s", ", ".join(dropped))
        return dropped


@dataclass(frozen=True)
class _Taking:
    """One claim call's arguments."""

    job_id: str
    period: int
    now: datetime
    lease_until: datetime
    fields: Document
    on_insert: Document
