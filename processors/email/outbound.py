"""Sending within the provider's rate budget: one request per time slot, batches while jobs
wait, and a pause on 429 that costs no job an attempt.

Every request to the provider, alone or batched, first takes a slot of the group's
budget (`processors.email.budget`). A job goes alone at once when a slot is at hand and
nobody waits (a budget well above the load: no batching, no rounds). Otherwise jobs that
may be batched (a job's first attempt) queue here; just before each slot of this
process, one loop takes the queued jobs in the order they came, up to the batch limit:

- one job goes alone, with its own `Idempotency-Key` (its job id);
- several go as one batch call. Its members and its key are recorded in the ledger
  *before* the call (`DeliveryLedger.record_batch`); if the outcome is unknown (a
  timeout, a 5xx, a crash), each member's next attempt repeats exactly that call
  (`repeat`), with the same entries and key, so the provider answers it from its
  idempotency record instead of sending again.

A job never shares a batch with another job of its Kafka key: the dispatcher runs one
job per key at a time, and a job waits here until its email is answered. So a batch
never puts an email ahead of an earlier first attempt of its key.

On a 429 the provider did nothing: every send of this process pauses until its
`retry-after`, and the same request is made again in a later slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from processors.email.batches import RecordedBatch
from processors.email.budget import SlotBudget
from processors.email.ledger import DeliveryLedger
from processors.email.senders import BatchResult, BatchSender, EmailSender, OutgoingEmail, email_params
from processors.errors import JobError, PermanentError, RateLimited, TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PAUSE_S = 1.0
"""A 429 without `retry-after`: pause this long."""
LEAD_MIN_S = 0.15
"""A batch is taken at least this long before its slot (at most half a slot ahead): the
store's writes pause now and then (SQLite's checkpoints behind FerretDB), and a record
that ends after the slot's start costs the whole slot."""
CLOSE_WAIT_S = 15.0
"""On close, how long calls under way may take to be answered."""
NO_WAIT_S = 0.01
"""A job whose slot is this close, with nobody queued, is sent alone at once."""
_SETTLED_MEMO = 1_000
"""Batches whose repeat was answered, kept to answer their other members at once."""


@dataclass(frozen=True)
class OutboundStats:
    queued: int
    batches_sent: int
    emails_batched: int
    singles_sent: int
    rate_limited: int
    repeats: int


@dataclass
class Handoff:
    """Whether an email has been handed to the provider: its call made, or its batch
    recorded for the call. Until then a job that stops (cancelled, a store error) is
    known not to have been sent."""

    handed: bool = False


@dataclass
class _Waiting:
    email: OutgoingEmail
    attempt: int
    future: asyncio.Future[str]
    handoff: Handoff
    taken: bool = False  # into a batch: its call is being recorded or made

    @property
    def job_id(self) -> str:
        return self.email.idempotency_key


class Outbound:
    """Sends through `sender` within `budget`; batches when the sender can and a ledger
    records the batches. With no budget it sends at once, one by one."""

    def __init__(
        self,
        sender: EmailSender,
        *,
        budget: SlotBudget | None = None,
        ledger: DeliveryLedger | None = None,
        max_batch: int = 1,
        wall: Callable[[], float] = time.time,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_batch_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._sender = sender
        self._budget = budget
        self._ledger = ledger
        batch_limit = getattr(sender, "max_batch", 1)
        self._max_batch = min(max_batch, batch_limit) if budget is not None and ledger is not None else 1
        self._wall = wall
        self._now = now
        self._new_batch_id = new_batch_id
        self._urgent: deque[_Waiting] = deque()  # codes and links: first into every batch
        self._queue: deque[_Waiting] = deque()  # bulk mail
        self._queued = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._repeating: dict[str, asyncio.Task[BatchResult]] = {}
        self._settled: OrderedDict[str, BatchResult] = OrderedDict()
        self._record_s = 0.02  # a running estimate of how long recording a batch takes
        self._closed = False
        self._batches_sent = 0
        self._emails_batched = 0
        self._singles_sent = 0
        self._rate_limited = 0
        self._repeats = 0

    @property
    def batching(self) -> bool:
        return self._max_batch > 1

    def stats(self) -> OutboundStats:
        return OutboundStats(
            queued=sum(1 for w in (*self._urgent, *self._queue) if not w.future.done()),
            batches_sent=self._batches_sent,
            emails_batched=self._emails_batched,
            singles_sent=self._singles_sent,
            rate_limited=self._rate_limited,
            repeats=self._repeats,
        )

    async def send(
        self,
        email: OutgoingEmail,
        *,
        attempt: int,
        batchable: bool,
        handoff: Handoff | None = None,
        urgent: bool = False,
    ) -> str:
        """Send `email` (the job `email.idempotency_key`, in its attempt `attempt`); its id.

        `batchable`: the job has never been sent any other way, so it may join a batch.
        `urgent`: a code or a link, which goes ahead of every bulk email waiting.
        `handoff` is marked once the email is handed to the provider.
        Raises `TransientError` (the outcome is unknown) or `PermanentError` (it was not sent).
        """
        handoff = handoff or Handoff()
        if self._closed:
            raise TransientError("the worker is shutting down", error_class="ShuttingDown")
        if not (batchable and self.batching) or self._slot_free_now():

            async def call() -> str:
                handoff.handed = True
                return await self._sender.send(email)

            result = await self._within_budget(call)
            self._singles_sent += 1
            return result
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        waiting = _Waiting(email, attempt, future, handoff)
        (self._urgent if urgent else self._queue).append(waiting)
        self._queued.set()
        self._ensure_loop()
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if not waiting.taken:
                future.cancel()  # still queued: the loop skips it
            elif not future.done():
                # Its batch is being recorded or sent. Give up only once the call is
                # answered: by then the batch is recorded, so whoever takes the job next
                # (another worker, after a rebalance) repeats that call and does not send
                # the email a second way.
                with contextlib.suppress(Exception):
                    await asyncio.shield(future)
            raise

    async def repeat(self, batch: RecordedBatch) -> BatchResult:
        """Make `batch`'s recorded call again; the answer per member, in its order.

        Members of one batch asking at once share one call, and a call answered is
        remembered, so a batch is repeated once per worker, not once per member.
        """
        settled = self._settled.get(batch.batch_id)
        if settled is not None:
            return settled
        task = self._repeating.get(batch.batch_id)
        if task is None:
            sender = self._batch_sender()
            self._repeats += 1

            async def call() -> BatchResult:
                return await sender.send_batch(batch.emails, idempotency_key=batch.idempotency_key)

            task = asyncio.create_task(self._within_budget(call))
            self._repeating[batch.batch_id] = task
            task.add_done_callback(lambda done: self._repeated(batch.batch_id, done))
        return await asyncio.shield(task)

    async def close(self) -> None:
        """Stop batching; jobs still queued fail as transient; calls under way are awaited."""
        self._closed = True
        if self._budget is not None:
            budget = self._budget.stats()
            log.info(
                "sending: %s; budget slots used %d, missed %d, waited %.1f s",
                self.stats(),
                budget.slots_used,
                budget.slots_missed,
                budget.waited_s,
            )
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for waiting in (*self._urgent, *self._queue):
            if not waiting.future.done():
                waiting.future.set_exception(
                    TransientError("the worker is shutting down", error_class="ShuttingDown")
                )
        self._urgent.clear()
        self._queue.clear()
        if self._calls:
            # Each is one provider call (bounded by its timeout), unless a 429 made it wait
            # for a slot that will not come now.
            _, late = await asyncio.wait(self._calls, timeout=CLOSE_WAIT_S)
            for call in late:
                call.cancel()
        for repeat in list(self._repeating.values()):
            repeat.cancel()

    # ------------------------------------------------------------------ the budget

    async def _within_budget(self, call: Callable[[], Awaitable[T]], *, slot_taken: bool = False) -> T:
        """Make `call` in a slot of the budget; on 429, pause and make it again."""
        budget = self._budget
        if budget is None:
            return await call()
        while True:
            if not slot_taken:
                await budget.acquire()
            slot_taken = False
            try:
                return await call()
            except RateLimited as error:
                self._rate_limited += 1
                pause_s = DEFAULT_PAUSE_S if error.retry_after_ms is None else error.retry_after_ms / 1000
                budget.pause_until(self._wall() + pause_s)
                log.warning("the provider answered 429: sends pause for %.1f s", pause_s)

    def _batch_sender(self) -> BatchSender:
        sender = self._sender
        if not hasattr(sender, "send_batch"):
            raise TransientError(
                "a batch must be repeated, and this sender cannot send batches",
                error_class="BatchSenderMissing",
            )
        return sender  # type: ignore[return-value]

    def _repeated(self, batch_id: str, task: asyncio.Task[BatchResult]) -> None:
        self._repeating.pop(batch_id, None)
        if task.cancelled() or task.exception() is not None:
            return
        self._settled[batch_id] = task.result()
        while len(self._settled) > _SETTLED_MEMO:
            self._settled.popitem(last=False)

    # ------------------------------------------------------------------ batching

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._form_batches(), name="outbound-batches")

    async def _form_batches(self) -> None:
        budget = self._budget
        assert budget is not None
        while True:
            while not self._live():
                self._queued.clear()
                await self._queued.wait()
            # Take the queue just before this process's next slot: jobs that come
            # meanwhile join the batch.
            slot_s = budget.next_slot_s()
            if slot_s is not None:
                delay_s = slot_s - self._lead_s() - self._wall()
                if delay_s > 0:
                    await asyncio.sleep(delay_s)
            members = self._take()
            if not members:
                continue
            try:
                await self._send_members(members)
            except asyncio.CancelledError:
                for waiting in members:
                    _fail(waiting, TransientError("the worker is shutting down", error_class="ShuttingDown"))
                raise
            except Exception:
                # A bug must not stop the loop: every later job would wait forever.
                log.exception("forming a batch failed; its jobs will be retried")
                for waiting in members:
                    _fail(waiting, TransientError("forming a batch failed", error_class="BatchFailed"))

    async def _send_members(self, members: list[_Waiting]) -> None:
        """Send `members` in the next slot: alone, or as a batch recorded first. Returns
        once the call is under way; its answer settles the members' futures."""
        budget = self._budget
        assert budget is not None
        if len(members) == 1:
            (alone,) = members
            await budget.acquire()
            self._spawn(self._send_alone(alone))
            return
        batch_id = self._new_batch_id()
        batch = RecordedBatch(
            batch_id=batch_id,
            idempotency_key=f"batch-{batch_id}",
            members=tuple(waiting.job_id for waiting in members),
            emails=tuple(email_params(waiting.email) for waiting in members),
            at=self._now(),
        )
        ledger = self._ledger
        assert ledger is not None
        started_s = time.monotonic()
        intended_s = budget.next_slot_s()
        try:
            await ledger.record_batch(batch, attempts={w.job_id: w.attempt for w in members})
        except JobError as error:
            # Not sent. A member whose note was stored finds the batch (if stored) and
            # sends it; one whose note was not is sent alone.
            for waiting in members:
                _fail(waiting, error)
            return
        record_s = time.monotonic() - started_s
        self._record_s = 0.8 * self._record_s + 0.2 * record_s
        for waiting in members:
            waiting.handoff.handed = True  # recorded: from now on, only this call may send it
        slot_s = await budget.acquire()
        if intended_s is not None and slot_s > intended_s + budget.period_s / 2:
            log.info(
                "a batch of %d missed its slot: recording it took %.0f ms",
                len(members),
                1000 * record_s,
            )
        self._spawn(self._send_batch(batch, members))

    async def _send_alone(self, waiting: _Waiting) -> None:
        async def call() -> str:
            waiting.handoff.handed = True
            return await self._sender.send(waiting.email)

        try:
            provider_id = await self._within_budget(call, slot_taken=True)
        except JobError as error:
            _fail(waiting, error)
            return
        self._singles_sent += 1
        if not waiting.future.done():
            waiting.future.set_result(provider_id)

    async def _send_batch(self, batch: RecordedBatch, members: list[_Waiting]) -> None:
        sender = self._batch_sender()

        async def call() -> BatchResult:
            return await sender.send_batch(batch.emails, idempotency_key=batch.idempotency_key)

        try:
            result = await self._within_budget(call, slot_taken=True)
        except JobError as error:
            for waiting in members:
                _fail(waiting, error)
            return
        self._batches_sent += 1
        self._emails_batched += len(members)
        for waiting, outcome in zip(members, result, strict=True):
            if isinstance(outcome, PermanentError):
                _fail(waiting, outcome)
            elif not waiting.future.done():
                waiting.future.set_result(outcome)

    def _spawn(self, call: Awaitable[None]) -> None:
        task = asyncio.ensure_future(call)
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    def _live(self) -> bool:
        for queue in (self._urgent, self._queue):
            while queue and queue[0].future.done():
                queue.popleft()  # cancelled while queued
        return bool(self._urgent or self._queue)

    def _take(self) -> list[_Waiting]:
        taken: list[_Waiting] = []
        for queue in (self._urgent, self._queue):
            while queue and len(taken) < self._max_batch:
                waiting = queue.popleft()
                if not waiting.future.done():
                    waiting.taken = True
                    taken.append(waiting)
        return taken

    def _slot_free_now(self) -> bool:
        """Nobody waits and a slot is at hand: the job goes alone at once. Batching is for
        jobs that wait for the budget; batching jobs that need not wait would only make
        them wait for each other (and for the slowest call of a round)."""
        if self._budget is None or self._live():
            return False
        slot_s = self._budget.next_slot_s()
        return slot_s is not None and slot_s - self._wall() <= NO_WAIT_S

    def _lead_s(self) -> float:
        """How long before its slot a batch is taken: time to record it, with room to spare
        (a record that ends after the slot's start costs the whole slot)."""
        period_s = self._budget.period_s if self._budget is not None else 1.0
        return min(max(LEAD_MIN_S, 4 * self._record_s), period_s / 2)


def _fail(waiting: _Waiting, error: BaseException) -> None:
    if not waiting.future.done():
        waiting.future.set_exception(error)
