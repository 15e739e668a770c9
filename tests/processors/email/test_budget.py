"""The slot budget: owners never share a slot, no rolling second holds more than the rate
across all processes, and waiters follow rebalances, pauses, late wakes and cancellations.

Most tests run in virtual time: an event loop whose clock jumps to the next timer instead
of waiting for it. asyncio's own scheduler and the budget (`clock=loop.clock`, the same
time shifted to a wall-clock epoch; `sleep=asyncio.sleep`) share it, so concurrent waiters
wake in the right order, instantly.
"""

from __future__ import annotations

import asyncio
import math
import random
import selectors
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.email.budget import BudgetStats, SlotBudget

EPOCH_S = 1_700_000_000.0  # a realistic wall clock: slot indexes in the billions
TOLERANCE_S = 1e-6  # float rounding at epoch scale; clocks are never that well synchronised
MARGIN_S = 0.02

T = TypeVar("T")


class _Timeless(selectors.DefaultSelector):
    """Never blocks: where the loop would wait for its next timer, time jumps there."""

    def __init__(self, loop: VirtualLoop) -> None:
        super().__init__()
        self.loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeError("deadlock: every task waits and no timer is set")
        self.loop.elapsed_s += timeout
        return super().select(0)


class VirtualLoop(asyncio.SelectorEventLoop):
    """The loop's own time counts from zero (asyncio compares timers to a nanosecond, finer
    than a float holds at epoch scale); `clock` is the wall clock the budget sees."""

    def __init__(self, epoch_s: float) -> None:
        self.epoch_s = epoch_s
        self.elapsed_s = 0.0
        super().__init__(_Timeless(self))

    def time(self) -> float:
        return self.elapsed_s

    def clock(self) -> float:
        return self.epoch_s + self.elapsed_s

    def stall(self, seconds: float) -> None:
        """Blocking code holding the loop: time passes and nothing else runs."""
        self.elapsed_s += seconds


def simulate(scenario: Callable[[VirtualLoop], Coroutine[Any, Any, T]], start_s: float = EPOCH_S) -> T:
    loop = VirtualLoop(start_s)
    with asyncio.Runner(loop_factory=lambda: loop) as runner:
        return runner.run(scenario(loop))


def budget_on(loop: VirtualLoop, rate_per_s: float, **kwargs: Any) -> SlotBudget:
    return SlotBudget(rate_per_s, clock=loop.clock, **kwargs)


def slot_of(budget: SlotBudget, start_s: float) -> int:
    return round(start_s / budget.period_s)


def max_in_a_second(starts_s: list[float]) -> int:
    """The most starts in any half-open window [t, t + 1 s)."""
    ordered = sorted(starts_s)
    most, first = 0, 0
    for last, start_s in enumerate(ordered):
        while ordered[first] <= start_s - 1 + TOLERANCE_S:
            first += 1
        most = max(most, last - first + 1)
    return most


def oversleeping(extra_s: Callable[[], float]) -> Callable[[float], Awaitable[None]]:
    async def sleep(delay_s: float) -> None:
        await asyncio.sleep(delay_s + extra_s())

    return sleep


# Construction and shares.


@pytest.mark.parametrize(
    ("rate_per_s", "margin_s"),
    [(0, 0.02), (-1, 0.02), (math.inf, 0.02), (math.nan, 0.02), (1, -0.01), (1, math.nan), (1, math.inf)],
)
def test_a_budget_needs_a_positive_rate_and_a_margin(rate_per_s: float, margin_s: float) -> None:
    with pytest.raises(ValueError, match=r"rate_per_s|margin_s"):
        SlotBudget(rate_per_s, margin_s=margin_s)


def test_ownership_must_be_indexes_of_the_owners() -> None:
    budget = SlotBudget(2)
    with pytest.raises(ValueError, match="owners"):
        budget.assign([], 0)
    with pytest.raises(ValueError, match="range"):
        budget.assign([3], 3)
    with pytest.raises(ValueError, match="range"):
        budget.assign([-1, 0], 3)


def test_a_process_gets_its_share_of_the_slots() -> None:
    budget = SlotBudget(2, margin_s=0.02)
    assert (budget.share, budget.slots_per_s) == (0.0, 0.0)
    budget.assign([1], 3)
    assert budget.share == pytest.approx(1 / 3)
    assert budget.slots_per_s == pytest.approx(2 / 3 / 1.02)
    budget.assign([0, 2, 2], 3)
    assert budget.share == pytest.approx(2 / 3)
    assert budget.period_s == pytest.approx(0.51)
    # At a high rate the margin spans several slots; that is allowed.
    assert SlotBudget(1000).period_s == pytest.approx(0.00102)


def test_a_pause_can_only_be_a_time() -> None:
    with pytest.raises(ValueError, match="at_s"):
        SlotBudget(1).pause_until(math.nan)


# The slot plan.


def test_three_owners_at_two_per_second_get_disjoint_slots_two_thirds_of_a_slot_a_second() -> None:
    window_s: list[float] = []

    async def scenario(loop: VirtualLoop) -> list[list[float]]:
        budgets = [budget_on(loop, 2) for _ in range(3)]
        for index, budget in enumerate(budgets):
            budget.assign([index], 3)
        end_s = loop.clock() + 30
        window_s.extend([loop.clock(), end_s])

        async def consume(budget: SlotBudget) -> list[float]:
            starts: list[float] = []
            while loop.clock() < end_s:
                starts.append(await budget.acquire())
            return starts

        return list(await asyncio.gather(*(consume(b) for b in budgets)))

    per_owner = simulate(scenario)
    period_s = 1.02 / 2
    slots = [{round(s / period_s) for s in starts} for starts in per_owner]
    for index, owned in enumerate(slots):
        assert {k % 3 for k in owned} == {index}
        assert len(owned) == len(per_owner[index])  # each slot once
        in_window = [s for s in per_owner[index] if window_s[0] <= s < window_s[1]]
        assert len(in_window) == pytest.approx(30 * 2 / 3 / 1.02, abs=1)  # ~0.65 a second
        # Evenly spread: one every three slots, no burst.
        assert {b - a for a, b in zip(sorted(owned), sorted(owned)[1:], strict=False)} == {3}
    assert sum(len(owned) for owned in slots) == len(set().union(*slots))  # disjoint
    assert max_in_a_second([s for starts in per_owner for s in starts]) <= 2


@st.composite
def groups(draw: st.DrawFn) -> tuple[float, float, list[list[int]], int, int]:
    """A rate, a margin, the owned indexes of each process, the consumers per process, a seed."""
    rate_per_s = draw(st.one_of(st.integers(1, 60).map(float), st.floats(0.3, 60.0)))
    margin_s = draw(st.sampled_from([0.005, 0.02, 0.1]))
    owners = draw(st.integers(1, 6))
    process_of = draw(st.lists(st.integers(0, 2), min_size=owners, max_size=owners))
    processes = [[i for i in range(owners) if process_of[i] == p] for p in sorted(set(process_of))]
    return rate_per_s, margin_s, processes, draw(st.integers(1, 3)), draw(st.integers(0, 2**32))


@settings(deadline=None, max_examples=60)
@given(group=groups(), start_s=st.sampled_from([0.0, 12.345, EPOCH_S]))
def test_no_rolling_second_holds_more_than_the_rate_across_all_processes(
    group: tuple[float, float, list[list[int]], int, int], start_s: float
) -> None:
    rate_per_s, margin_s, processes, consumers, seed = group
    owners = sum(len(owned) for owned in processes)
    lateness = random.Random(seed)

    def late_s() -> float:
        # Mostly on time, some up to the margin late, some later still (those slots are missed).
        return lateness.choice([0.0, lateness.uniform(0, margin_s), lateness.uniform(margin_s, 3 * margin_s)])

    async def scenario(loop: VirtualLoop) -> tuple[list[float], list[BudgetStats]]:
        budgets = [
            budget_on(loop, rate_per_s, margin_s=margin_s, sleep=oversleeping(late_s)) for _ in processes
        ]
        for budget, owned in zip(budgets, processes, strict=True):
            budget.assign(owned, owners)
        end_s = loop.clock() + 10
        requests_s: list[float] = []

        async def consume(budget: SlotBudget) -> None:
            while loop.clock() < end_s:
                start_s = await budget.acquire()
                request_s = loop.clock()  # the request starts now, perhaps a little late
                assert start_s <= request_s <= start_s + margin_s + TOLERANCE_S
                requests_s.append(request_s)

        await asyncio.gather(*(consume(b) for b in budgets for _ in range(consumers)))
        return requests_s, [b.stats() for b in budgets]

    requests_s, stats = simulate(scenario, start_s)
    assert max_in_a_second(requests_s) <= math.ceil(rate_per_s)
    assert len(requests_s) == sum(s.slots_used for s in stats)


@settings(deadline=None, max_examples=200)
@given(
    rate_per_s=st.floats(0.1, 2000),
    owners=st.integers(1, 12),
    data=st.data(),
    now_s=st.one_of(st.floats(0, 1e6), st.floats(EPOCH_S, EPOCH_S + 1e6)),
)
def test_the_next_owned_slot_is_the_first_open_slot_of_an_owned_index(
    rate_per_s: float, owners: int, data: st.DataObject, now_s: float
) -> None:
    owned = data.draw(st.sets(st.integers(0, owners - 1)))
    margin_s = min(0.02, (1 / rate_per_s) / 2)
    budget = SlotBudget(rate_per_s, margin_s=margin_s, clock=lambda: now_s)
    budget.assign(owned, owners)
    if not owned:
        assert budget.next_slot_s() is None
        return
    slot = math.ceil((now_s - margin_s) / budget.period_s) - 2
    while slot * budget.period_s < now_s - margin_s or slot % owners not in owned:
        slot += 1
    assert budget.next_slot_s() == slot * budget.period_s
    assert budget.next_slot_s() == slot * budget.period_s  # looking reserves nothing


# Waiting.


def test_a_waiter_that_wakes_too_late_gives_its_slot_up_and_takes_the_next() -> None:
    async def scenario(loop: VirtualLoop) -> None:
        late = iter([0.05])  # the first sleep overruns by 50 ms, more than the 20 ms margin
        budget = budget_on(loop, 1, sleep=oversleeping(lambda: next(late, 0.0)))
        budget.assign([0], 1)
        loop.stall(0.5)  # between two slots
        planned_s = budget.next_slot_s()
        assert planned_s is not None
        assert planned_s > loop.clock()
        assert await budget.acquire() == pytest.approx(planned_s + budget.period_s)
        assert loop.clock() == pytest.approx(planned_s + budget.period_s)
        stats = budget.stats()
        assert (stats.slots_used, stats.slots_missed) == (1, 1)
        assert stats.waited_s == pytest.approx(planned_s + budget.period_s - (EPOCH_S + 0.5))

    simulate(scenario)


def test_an_event_loop_stall_skips_the_slots_it_covered() -> None:
    async def scenario(loop: VirtualLoop) -> None:
        budget = budget_on(loop, 10)
        budget.assign([0], 1)
        first_s = await budget.acquire()
        waiters = [asyncio.ensure_future(budget.acquire()) for _ in range(3)]
        await asyncio.sleep(0.001)  # all asleep for their slots
        loop.stall(0.35)  # blocking code holds the loop for 350 ms: three slots pass
        starts_s = await asyncio.gather(*waiters)
        assert [slot_of(budget, s) - slot_of(budget, first_s) for s in starts_s] == [4, 5, 6]
        assert budget.stats().slots_missed == 1  # the head gave one up; the others just moved

    simulate(scenario)


def test_a_slot_already_open_is_taken_at_once() -> None:
    async def scenario(loop: VirtualLoop) -> None:
        budget = budget_on(loop, 1)
        budget.assign([0], 1)
        slot = math.ceil(loop.clock() / budget.period_s)
        loop.stall(slot * budget.period_s + 0.01 - loop.clock())  # within the margin of that slot
        assert budget.next_slot_s() == slot * budget.period_s
        assert await budget.acquire() == slot * budget.period_s
        assert loop.clock() == pytest.approx(slot * budget.period_s + 0.01)  # at once
        assert budget.next_slot_s() == (slot + 1) * budget.period_s  # each slot once

    simulate(scenario)


def test_a_pause_is_honoured_extended_and_never_shortened() -> None:
    async def scenario(loop: VirtualLoop) -> None:
        budget = budget_on(loop, 2)
        budget.assign([0], 1)
        t0_s = loop.clock()
        budget.pause_until(t0_s + 3.3)
        waiter = asyncio.ensure_future(budget.acquire())
        loop.call_later(1, budget.pause_until, t0_s + 1.5)  # earlier: ignored
        await asyncio.sleep(1.5)
        assert budget.stats().paused_until_s == t0_s + 3.3
        start_s = await waiter
        assert t0_s + 3.3 <= start_s < t0_s + 3.3 + budget.period_s

        # A waiter already sleeping for a slot re-reserves past a new pause.
        waiter = asyncio.ensure_future(budget.acquire())
        loop.call_later(0.1, budget.pause_until, start_s + 7)
        second_s = await waiter
        assert start_s + 7 <= second_s < start_s + 7 + budget.period_s
        assert budget.stats().paused_until_s is None  # over by now

    simulate(scenario)


def test_a_rebalance_moves_waiters_to_the_slots_now_owned() -> None:
    async def scenario(loop: VirtualLoop) -> None:
        budget = budget_on(loop, 1)  # slots of 1.02 s, a cycle of four owners 4.08 s
        budget.assign([0], 4)
        planned_s = budget.next_slot_s()
        assert planned_s is not None
        waiter = asyncio.ensure_future(budget.acquire())
        await asyncio.sleep(0.001)
        budget.assign([2], 4)  # index 0 went to another process
        start_s = await waiter
        assert slot_of(budget, start_s) % 4 == 2

        planned_s = budget.next_slot_s()
        assert planned_s is not None
        assert planned_s - loop.clock() > 3  # the next index 2 is far
        waiter = asyncio.ensure_future(budget.acquire())
        await asyncio.sleep(0.001)
        budget.assign([1], 2)  # fewer partitions, and a nearer slot: woken early for it
        start_s = await waiter
        assert slot_of(budget, start_s) % 2 == 1
        assert start_s < planned_s

    simulate(scenario)


def test_with_nothing_owned_acquirers_wait_until_something_is() -> None:
    async def scenario(loop: VirtualLoop) -> None:
        budget = budget_on(loop, 5)
        assert budget.next_slot_s() is None
        t0_s = loop.clock()
        waiter = asyncio.ensure_future(budget.acquire())
        loop.call_later(5, budget.assign, [1], 2)
        assert t0_s + 5 - MARGIN_S <= await waiter <= t0_s + 5 + 2 * budget.period_s

        budget.assign([], 2)  # all partitions revoked
        waiter = asyncio.ensure_future(budget.acquire())
        loop.call_later(60, budget.assign, [0, 1], 2)
        assert await waiter >= t0_s + 65 - MARGIN_S
        assert budget.stats().waited_s >= 65 - 2 * MARGIN_S

    simulate(scenario)


def test_an_owned_waiter_revoked_mid_sleep_waits_for_the_next_assignment() -> None:
    async def scenario(loop: VirtualLoop) -> None:
        budget = budget_on(loop, 1)
        budget.assign([0], 1)
        waiter = asyncio.ensure_future(budget.acquire())
        await asyncio.sleep(0.001)
        budget.assign([], 1)
        loop.call_later(30, budget.assign, [0], 1)
        t0_s = loop.clock()
        assert await waiter >= t0_s + 30 - MARGIN_S

    simulate(scenario)


def test_concurrent_acquirers_get_distinct_slots_first_come_first_served() -> None:
    async def scenario(loop: VirtualLoop) -> None:
        budget = budget_on(loop, 3)
        budget.assign([0, 2], 5)
        order: list[int] = []

        async def acquire(i: int) -> float:
            start_s = await budget.acquire()
            order.append(i)
            return start_s

        starts_s = await asyncio.gather(*(acquire(i) for i in range(8)))
        slots = [slot_of(budget, s) for s in starts_s]
        assert slots == sorted(set(slots))
        assert order == list(range(8))
        assert {k % 5 for k in slots} == {0, 2}
        assert slots[-1] - slots[0] == 17  # consecutive owned slots: 0, 2, 5, 7, ... of five

    simulate(scenario)


def test_a_cancelled_waiter_frees_its_slot_for_those_behind_it() -> None:
    async def scenario(loop: VirtualLoop) -> None:
        budget = budget_on(loop, 1)
        budget.assign([0], 1)
        planned: list[float | None] = []
        waiters = []
        for _ in range(3):
            planned.append(budget.next_slot_s())
            waiters.append(asyncio.ensure_future(budget.acquire()))
            await asyncio.sleep(0.001)
        waiters[1].cancel()
        assert await waiters[0] == planned[0]
        assert await waiters[2] == planned[1]  # moved up into the freed slot
        with pytest.raises(asyncio.CancelledError):
            await waiters[1]

    simulate(scenario)


def test_many_cancellations_at_once_leave_the_rest_consistent() -> None:
    async def scenario(loop: VirtualLoop) -> None:
        budget = budget_on(loop, 10)
        budget.assign([0], 1)
        waiters = [asyncio.ensure_future(budget.acquire()) for _ in range(50)]
        await asyncio.sleep(0.001)
        first = budget.next_slot_s()
        for i, waiter in enumerate(waiters):
            if i % 5:
                waiter.cancel()
        survivors = waiters[::5]
        starts_s = await asyncio.gather(*survivors)
        slots = [slot_of(budget, s) for s in starts_s]
        assert slots == list(range(slots[0], slots[0] + 10))  # no gaps left by the cancelled
        assert first is not None
        assert slots[0] < slot_of(budget, first)
        assert budget.next_slot_s() == pytest.approx((slots[-1] + 1) * budget.period_s)

    simulate(scenario)


def test_a_cancelled_sleep_leaves_no_task_behind() -> None:
    async def scenario(loop: VirtualLoop) -> None:
        budget = budget_on(loop, 1)
        budget.assign([0], 1)
        waiter = asyncio.ensure_future(budget.acquire())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await asyncio.sleep(0)
        assert asyncio.all_tasks() == {asyncio.current_task()}

    simulate(scenario)


def test_an_error_from_the_sleep_reaches_the_acquirer_and_frees_the_slot() -> None:
    async def broken(delay_s: float) -> None:
        raise OSError("clock gone")

    async def scenario(loop: VirtualLoop) -> None:
        budget = budget_on(loop, 1, sleep=broken)
        budget.assign([0], 1)
        planned_s = budget.next_slot_s()
        with pytest.raises(OSError, match="clock gone"):
            await budget.acquire()
        assert budget.next_slot_s() == planned_s

    simulate(scenario)


# The real clock.


async def test_a_thousand_a_second_serves_five_hundred_acquirers_without_burning_cpu() -> None:
    budget = SlotBudget(1000)
    budget.assign([0], 1)
    wall_s, cpu_s = time.perf_counter(), time.process_time()
    starts_s = await asyncio.gather(*(budget.acquire() for _ in range(500)))
    wall_s, cpu_s = time.perf_counter() - wall_s, time.process_time() - cpu_s
    assert len(set(starts_s)) == 500
    assert max_in_a_second(starts_s) <= 1000
    assert wall_s < 2  # about half a second of slots, plus any slots missed to lag
    assert cpu_s < 2
    stats = budget.stats()
    assert stats.slots_used == 500
