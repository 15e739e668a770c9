"""A request budget shared by the processes of one consumer group, by fixed time slots.

A provider allows `rate_per_s` requests per rolling second for the whole account (Resend's
team limit; OpenAI's requests per minute, paced per second: `processors.ads.budget`).
The worker processes of a consumer group share it without talking to each other or to
any other service: each one knows only which partitions it owns and how many there are.

Time (wall clock, epoch seconds) is cut into slots of `period_s = (1 + margin_s) /
rate_per_s`; slot k starts at `k * period_s` and belongs to owner index `k % owners`,
where the owners are the partitions of the consumed topic. Owners never share a slot,
and a process owning m of n partitions gets m/n of the slots: fractional shares (two
requests a second over three processes), evenly spread rather than in bursts.

A request may start only within `margin_s` after its slot's start. Among any
`rate_per_s + 1` requests the first and the last slot lie at least `rate_per_s` slots
apart, so the requests span at least `rate_per_s * period_s - margin_s = 1` second: no
rolling second ever holds more than `rate_per_s` requests across all processes, given
synchronised clocks. (For a non-integer rate, no second holds more than
`ceil(rate_per_s)` and the long-run rate stays below `rate_per_s`.) A waiter that wakes
later than that (event-loop lag, a clock step) gives its slot up, counted as missed, and
takes the next free one. The margin costs `margin_s` of every second of budget, and it
may be longer than a slot (20 ms at 1000 a second is 20 slots): requests may then start
out of slot order, or several at once after a lull, and the bound above still holds.

Each acquirer reserves a slot when it arrives: the next owned slot after the last one
reserved, used or given up, and not before a pause. Reservations follow arrival order,
so concurrent acquirers get distinct slots, first come first served. The next owned
slot is found arithmetically (a bisection in the sorted owned indexes), never by
scanning slots, so a high rate costs nothing while nobody asks.

Whatever changes the plan re-reserves every waiter in arrival order: a rebalance
(`assign`), a pause (`pause_until`, after the provider's 429 retry-after), a missed
slot. A waiter sleeps on the injected `sleep` raced against a nudge; it is nudged when
its slot moves earlier, and when its slot moves later it simply wakes at the old time
and sleeps on. A cancelled waiter leaves the queue and the ones behind it move up into
the freed slots; many cancellations in a row (a shutdown) share one re-reservation.

The clock and the sleep are injected, so that tests can run in virtual time.
"""

from __future__ import annotations

import asyncio
import math
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from functools import partial

DEFAULT_MARGIN_S = 0.02


@dataclass(frozen=True)
class BudgetStats:
    slots_used: int
    slots_missed: int  # woken too late, given up
    waited_s: float  # total time acquirers spent waiting, by the budget's clock
    paused_until_s: float | None  # the pause in force now, if any


class _Waiter:
    """One acquirer: its reserved slot (None while nothing is owned) and what wakes it early."""

    __slots__ = ("nudge", "slot")

    def __init__(self, slot: int | None) -> None:
        self.slot = slot
        self.nudge: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self.nudge is not None and not self.nudge.done():
            self.nudge.set_result(None)


def _relay(nudge: asyncio.Future[None], sleeper: asyncio.Future[None]) -> None:
    """The sleep is over: wake its waiter, unless something else did first."""
    if sleeper.cancelled():
        return
    error = sleeper.exception()
    if nudge.done():
        return
    if error is None:
        nudge.set_result(None)
    else:
        nudge.set_exception(error)


class SlotBudget:
    def __init__(
        self,
        rate_per_s: float,
        *,
        margin_s: float = DEFAULT_MARGIN_S,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError(f"rate_per_s must be positive, not {rate_per_s}")
        if not (math.isfinite(margin_s) and margin_s >= 0):
            raise ValueError(f"margin_s must be zero or more, not {margin_s}")
        self.rate_per_s = rate_per_s
        self.margin_s = margin_s
        self.period_s = (1 + margin_s) / rate_per_s
        self._clock = clock
        self._sleep = sleep
        self._owned: tuple[int, ...] = ()
        self._owners = 0
        self._waiters: dict[_Waiter, None] = {}  # in arrival order
        self._spent_through: int | None = None  # the last slot used or given up
        self._paused_until_s: float | None = None
        self._rebook_pending = False
        self._slots_used = 0
        self._slots_missed = 0
        self._waited_s = 0.0

    def assign(self, owned: Collection[int], owners: int) -> None:
        """This process now owns the indexes `owned` out of `owners` (after a rebalance)."""
        if owners < 1:
            raise ValueError(f"owners must be at least 1, not {owners}")
        indexes = tuple(sorted(set(owned)))
        if indexes and (indexes[0] < 0 or indexes[-1] >= owners):
            raise ValueError(f"owned indexes {list(indexes)} are not all in range({owners})")
        self._owned = indexes
        self._owners = owners
        self._rebook()

    @property
    def share(self) -> float:
        return len(self._owned) / self._owners if self._owners else 0.0

    @property
    def slots_per_s(self) -> float:
        return self.share / self.period_s

    async def acquire(self) -> float:
        """Wait for the next free owned slot; its start (epoch s). Start the request now."""
        entered_s = self._clock()
        waiter = _Waiter(self._free_slot(entered_s))
        self._waiters[waiter] = None
        try:
            while True:
                slot = waiter.slot
                if slot is None:
                    await self._doze(waiter, None)
                    continue
                start_s = slot * self.period_s
                now_s = self._clock()
                if now_s < start_s:
                    await self._doze(waiter, start_s - now_s)
                    continue
                if now_s - start_s <= self.margin_s:
                    del self._waiters[waiter]
                    self._spend(slot)
                    self._slots_used += 1
                    return start_s
                self._spend(slot)
                self._slots_missed += 1
                self._rebook(now_s)
        except BaseException:
            self._leave(waiter)
            raise
        finally:
            self._waited_s += self._clock() - entered_s

    def pause_until(self, at_s: float) -> None:
        """Use no slot starting before `at_s`. A later pause extends, an earlier one is ignored."""
        if not math.isfinite(at_s):
            raise ValueError(f"at_s must be a time, not {at_s}")
        if self._paused_until_s is not None and at_s <= self._paused_until_s:
            return
        self._paused_until_s = at_s
        self._rebook()

    def next_slot_s(self) -> float | None:
        """The start of the slot the next acquirer would get (None while nothing is owned)."""
        slot = self._free_slot(self._clock())
        return None if slot is None else slot * self.period_s

    def stats(self) -> BudgetStats:
        paused = self._paused_until_s
        return BudgetStats(
            slots_used=self._slots_used,
            slots_missed=self._slots_missed,
            waited_s=self._waited_s,
            paused_until_s=paused if paused is not None and paused > self._clock() else None,
        )

    # Slot arithmetic.

    def _first_slot_from(self, at_s: float) -> int:
        """The first slot starting at or after `at_s`."""
        slot = math.ceil(at_s / self.period_s)
        while slot * self.period_s < at_s:
            slot += 1
        while (slot - 1) * self.period_s >= at_s:
            slot -= 1
        return slot

    def _next_owned(self, slot: int) -> int:
        """The first owned slot at or after `slot` (something must be owned)."""
        cycle, index = divmod(slot, self._owners)
        at = bisect_left(self._owned, index)
        if at < len(self._owned):
            return cycle * self._owners + self._owned[at]
        return (cycle + 1) * self._owners + self._owned[0]

    def _floor(self, now_s: float) -> int:
        """The first slot anyone may still reserve: still open, unspent and not paused."""
        floor = self._first_slot_from(now_s - self.margin_s)
        if self._spent_through is not None:
            floor = max(floor, self._spent_through + 1)
        if self._paused_until_s is not None:
            floor = max(floor, self._first_slot_from(self._paused_until_s))
        return floor

    def _free_slot(self, now_s: float) -> int | None:
        """The slot a new acquirer reserves: after every reserved one."""
        if not self._owned:
            return None
        floor = self._floor(now_s)
        if self._waiters:
            last = next(reversed(self._waiters)).slot
            if last is not None:
                floor = max(floor, last + 1)
        return self._next_owned(floor)

    def _spend(self, slot: int) -> None:
        if self._spent_through is None or slot > self._spent_through:
            self._spent_through = slot

    # Waiting and re-reserving.

    async def _doze(self, waiter: _Waiter, delay_s: float | None) -> None:
        """Sleep `delay_s` (None: forever), or until the waiter is nudged."""
        nudge: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter.nudge = nudge
        sleeper: asyncio.Future[None] | None = None
        if delay_s is not None:
            sleeper = asyncio.ensure_future(self._sleep(delay_s))
            sleeper.add_done_callback(partial(_relay, nudge))
        try:
            await nudge
        finally:
            waiter.nudge = None
            if sleeper is not None:
                sleeper.cancel()

    def _rebook(self, now_s: float | None = None) -> None:
        """Reserve slots for every waiter again, in arrival order."""
        self._rebook_pending = False
        floor = self._floor(self._clock() if now_s is None else now_s)
        for waiter in self._waiters:
            slot: int | None = None
            if self._owned:
                slot = self._next_owned(floor)
                floor = slot + 1
            if slot == waiter.slot:
                continue
            earlier = slot is None or waiter.slot is None or slot < waiter.slot
            waiter.slot = slot
            if earlier:
                waiter.wake()

    def _leave(self, waiter: _Waiter) -> None:
        """A waiter gave up: the ones behind it move up, in one go after many leave at once."""
        if waiter not in self._waiters:
            return
        last = next(reversed(self._waiters)) is waiter
        del self._waiters[waiter]
        if not last and not self._rebook_pending:
            self._rebook_pending = True
            asyncio.get_running_loop().call_soon(self._rebook_if_pending)

    def _rebook_if_pending(self) -> None:
        if self._rebook_pending:
            self._rebook()
