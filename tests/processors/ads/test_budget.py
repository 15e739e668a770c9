"""The model's budget: requests and tokens per minute for the group, shared by partitions,
charged with an offline estimate and corrected by the answer's usage, paused by a 429.

Virtual time (the email budget's test loop): the clock jumps to the next timer, so a
minute of waiting costs nothing.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.ads.budget import (
    DEFAULT_TOKENS_PER_CHAR,
    ESTIMATE_MARGIN,
    MIN_TOKENS_PER_CHAR,
    CallBudget,
    ModelBudget,
    TokenEstimator,
    Unlimited,
)
from tests.processors.email.test_budget import VirtualLoop, simulate

MINUTE_S = 60.0
SPAN_S = 61.0  # a charge counts for the minute plus a second's margin


def budget_on(loop: VirtualLoop, **limits: int) -> ModelBudget:
    return ModelBudget(clock=loop.clock, sleep=asyncio.sleep, **limits)


def full_share(budget: ModelBudget, loop: VirtualLoop, *, owned: tuple[int, ...] = (0, 1, 2)) -> None:
    """Own `owned` of 3 partitions, as a process that has held them for long (no ramp)."""
    budget.assign(owned, 3)
    if budget.tokens is not None:
        budget.tokens._from = budget.tokens._target  # a share held since long ago


async def call(budget: ModelBudget, loop: VirtualLoop, *, chars: int, out: int) -> float:
    """One call: its start time. It answers at once, having used a token per 4 prompt
    characters: it holds `settled(chars, out)` tokens from then on."""
    ticket = await budget.acquire(prompt_chars=chars, max_output_tokens=out)
    started_s = loop.clock()
    ticket.settle(input_tokens=chars // 4, output_tokens=out // 2)
    return started_s


def settled(chars: int, out: int) -> int:
    """What a call of `call` holds once answered: its prompt's tokens and the output asked for."""
    return chars // 4 + out


def most_in_a_minute(events: list[tuple[float, int]], window_s: float = MINUTE_S) -> tuple[int, int]:
    """The most calls, and the most tokens, started within any rolling window."""
    ordered = sorted(events)
    most_calls = most_tokens = 0
    first = 0
    tokens = 0
    for last, (at_s, charged) in enumerate(ordered):
        tokens += charged
        while ordered[first][0] <= at_s - window_s + 1e-6:
            tokens -= ordered[first][1]
            first += 1
        most_calls = max(most_calls, last - first + 1)
        most_tokens = max(most_tokens, tokens)
    return most_calls, most_tokens


def run(scenario: Any) -> Any:
    return simulate(scenario)


def test_the_budget_and_the_no_budget_follow_the_protocol() -> None:
    budgets: list[CallBudget] = [ModelBudget(requests_per_min=60), Unlimited()]
    assert len(budgets) == 2
    with pytest.raises(ValueError, match="0 \\(no limit\\)"):
        ModelBudget(requests_per_min=-1)


# Estimates.


def test_the_estimate_starts_at_a_token_per_three_characters_plus_the_output_asked_for() -> None:
    budget = ModelBudget(tokens_per_min=40_000)
    assert budget.estimate(prompt_chars=3_000, max_output_tokens=500) == 1_000 + 500
    assert pytest.approx(1 / 3) == DEFAULT_TOKENS_PER_CHAR


def test_the_ratio_follows_the_highest_recent_usage_with_a_margin() -> None:
    estimator = TokenEstimator()
    estimator.observe(2_000, 1_000)  # the schema and framing: more tokens than chars / 4
    assert estimator.tokens_per_char == pytest.approx(0.5 * ESTIMATE_MARGIN)
    estimator.observe(2_000, 500)  # a cheaper answer does not lower it while the dear one is recent
    assert estimator.tokens_per_char == pytest.approx(0.5 * ESTIMATE_MARGIN)
    for _ in range(20):
        estimator.observe(2_000, 500)
    assert estimator.tokens_per_char == pytest.approx(0.25 * ESTIMATE_MARGIN)
    estimator.observe(2_000, 0)  # no usage reported: nothing learned
    estimator.observe(0, 10)
    assert estimator.tokens_per_char == pytest.approx(0.25 * ESTIMATE_MARGIN)
    for _ in range(20):
        estimator.observe(2_000, 1)  # a server reporting nonsense
    assert estimator.tokens_per_char == MIN_TOKENS_PER_CHAR


# Requests.


def test_requests_are_paced_at_the_rate_per_second_and_shared_by_partitions() -> None:
    async def scenario(loop: VirtualLoop) -> list[list[float]]:
        first, second = budget_on(loop, requests_per_min=60), budget_on(loop, requests_per_min=60)
        first.assign([0, 2], 3)
        second.assign([1], 3)
        end_s = loop.clock() + 120

        async def consume(budget: ModelBudget) -> list[float]:
            starts = []
            while loop.clock() < end_s:
                started_s = await call(budget, loop, chars=1_000, out=100)
                if started_s < end_s:  # jobs still waiting at the end start later
                    starts.append(started_s)
            return starts

        # Eight jobs at once in each process, as AD_CONCURRENCY=8.
        per_job = await asyncio.gather(*(consume(b) for b in (first, second) for _ in range(8)))
        return [list(itertools.chain(*per_job[:8])), list(itertools.chain(*per_job[8:]))]

    first, second = run(scenario)
    both = sorted(first + second)
    gaps = [b - a for a, b in itertools.pairwise(both)]
    assert min(gaps) >= 1.0  # 60 a minute, one a second at most
    assert len(first) == pytest.approx(2 * len(second), abs=2)  # two partitions of three
    assert most_in_a_minute([(s, 0) for s in both])[0] <= 60
    assert len(both) == pytest.approx(120 / 1.02, abs=2)


def test_while_the_group_rebalances_no_call_starts() -> None:
    async def scenario(loop: VirtualLoop) -> float:
        budget = budget_on(loop, requests_per_min=600, tokens_per_min=100_000)
        full_share(budget, loop)
        budget.assign([], 3)  # revoked
        began_s = loop.clock()
        waiting = asyncio.create_task(call(budget, loop, chars=300, out=100))
        await asyncio.sleep(30)
        assert not waiting.done()
        budget.assign([0, 1, 2], 3)  # the same share back: at once, no ramp
        return await waiting - began_s

    assert run(scenario) == pytest.approx(30, abs=0.2)


# Tokens.


def test_tokens_started_in_any_minute_stay_within_the_share() -> None:
    async def scenario(loop: VirtualLoop) -> list[tuple[float, int]]:
        budget = budget_on(loop, tokens_per_min=10_000)
        full_share(budget, loop)
        events: list[tuple[float, int]] = []
        end_s = loop.clock() + 300

        async def consume() -> None:
            while loop.clock() < end_s:
                events.append((await call(budget, loop, chars=1_500, out=400), settled(1_500, 400)))

        await asyncio.gather(*(consume() for _ in range(8)))
        return events

    events = run(scenario)
    calls, tokens = most_in_a_minute(events, SPAN_S)
    assert tokens <= 10_000
    assert calls == 10_000 // settled(1_500, 400)  # 775 tokens each: 12 a minute, no fewer
    assert len(events) >= 5 * 12


def test_two_processes_share_the_tokens_by_partitions() -> None:
    async def scenario(loop: VirtualLoop) -> list[list[tuple[float, int]]]:
        budgets = [budget_on(loop, tokens_per_min=9_000) for _ in range(2)]
        full_share(budgets[0], loop, owned=(0, 1))
        full_share(budgets[1], loop, owned=(2,))
        end_s = loop.clock() + 300
        per_process: list[list[tuple[float, int]]] = [[], []]

        async def consume(index: int) -> None:
            while loop.clock() < end_s:
                started_s = await call(budgets[index], loop, chars=1_500, out=500)
                if started_s < end_s:  # jobs still waiting at the end start later
                    per_process[index].append((started_s, settled(1_500, 500)))

        await asyncio.gather(*(consume(i) for i in (0, 1) for _ in range(8)))
        return per_process

    first, second = run(scenario)
    assert most_in_a_minute(first + second, SPAN_S)[1] <= 9_000
    assert most_in_a_minute(first, SPAN_S)[1] <= 6_000
    assert most_in_a_minute(second, SPAN_S)[1] <= 3_000
    assert len(first) == pytest.approx(2 * len(second), rel=0.1)


def test_a_new_process_grows_into_its_share_over_a_minute() -> None:
    async def scenario(loop: VirtualLoop) -> list[float]:
        budget = budget_on(loop, tokens_per_min=6_000)
        began_s = loop.clock()
        budget.assign([0, 1, 2], 3)  # nothing held before: the share grows from 0
        starts = []
        for _ in range(6):
            await budget.acquire(prompt_chars=1_500, max_output_tokens=500)  # never settled
            starts.append(loop.clock() - began_s)
        return starts

    starts = run(scenario)
    # 1,000 tokens a call: the n-th fits once the share has grown to n x 1,000 (every 10 s).
    assert starts == pytest.approx([10, 20, 30, 40, 50, 60], abs=0.01)


@settings(deadline=None, max_examples=30)
@given(
    owned_before=st.sampled_from([(0, 1, 2), (0, 1), (2,)]),
    owned_after=st.sampled_from([(0, 1, 2), (0, 1), (1,), (0,)]),
    gap_s=st.floats(0, 90),
)
def test_after_a_rebalance_the_group_never_holds_more_than_the_limit(
    owned_before: tuple[int, ...], owned_after: tuple[int, ...], gap_s: float
) -> None:
    """Process A held `owned_before` for long and spent it evenly; then B, new, takes the
    rest of the partitions (A keeps `owned_after`). Charges of both, in any window, stay
    within the limit: B's share grows as A's old calls leave the window."""
    tpm = 12_000

    async def scenario(loop: VirtualLoop) -> list[tuple[float, int]]:
        old, new = budget_on(loop, tokens_per_min=tpm), budget_on(loop, tokens_per_min=tpm)
        full_share(old, loop, owned=owned_before)
        events: list[tuple[float, int]] = []
        end_s = loop.clock() + 120 + gap_s + 120

        async def consume(budget: ModelBudget) -> None:
            while loop.clock() < end_s:
                started_s = await call(budget, loop, chars=1_500, out=500)
                events.append((started_s, settled(1_500, 500)))

        tasks = [asyncio.create_task(consume(old)) for _ in range(4)]
        await asyncio.sleep(120)
        old.assign([], 3)
        await asyncio.sleep(gap_s)
        old.assign(owned_after, 3)
        taken = [p for p in range(3) if p not in owned_after]
        new.assign(taken, 3)
        if taken:
            tasks += [asyncio.create_task(consume(new)) for _ in range(4)]
        await asyncio.gather(*tasks)
        return events

    events = run(scenario)
    assert most_in_a_minute(events, SPAN_S)[1] <= tpm


def test_an_answer_smaller_than_its_estimate_frees_tokens_and_a_larger_one_takes_more() -> None:
    async def scenario(loop: VirtualLoop) -> tuple[float, float, float]:
        budget = budget_on(loop, tokens_per_min=3_000)
        full_share(budget, loop)
        began_s = loop.clock()
        # 2,100 chars at 1/3 + 500 = 1,200 tokens each: two fit, the third waits.
        first = await budget.acquire(prompt_chars=2_100, max_output_tokens=500)
        second = await budget.acquire(prompt_chars=2_100, max_output_tokens=500)
        third = asyncio.create_task(budget.acquire(prompt_chars=2_100, max_output_tokens=500))
        await asyncio.sleep(5)
        assert not third.done()
        # The first used 100 prompt tokens: it holds 100 + the 500 asked for, 600 freed.
        first.settle(input_tokens=100, output_tokens=200)
        (await third).settle(input_tokens=300, output_tokens=100)  # 800
        freed_at_s = loop.clock() - began_s
        # The second was dearer than estimated: 2,000 + 500; the next is estimated at the
        # ratio learned from it, 2,000 / 2,100 x 1.1, and waits for the window to empty.
        second.settle(input_tokens=2_000, output_tokens=500)
        await budget.acquire(prompt_chars=2_100, max_output_tokens=500)
        after_dear_s = loop.clock() - began_s
        return freed_at_s, after_dear_s, budget.estimator.tokens_per_char

    freed_at_s, after_dear_s, ratio = run(scenario)
    assert freed_at_s == pytest.approx(5)
    assert after_dear_s == pytest.approx(5 + SPAN_S)  # when the third, too, has left the window
    assert ratio == pytest.approx(2_000 / 2_100 * ESTIMATE_MARGIN)


def test_a_call_refused_with_a_429_frees_its_tokens() -> None:
    async def scenario(loop: VirtualLoop) -> float:
        budget = budget_on(loop, tokens_per_min=2_000)
        full_share(budget, loop)
        began_s = loop.clock()
        refused = await budget.acquire(prompt_chars=3_000, max_output_tokens=500)  # 1,500
        waiting = asyncio.create_task(budget.acquire(prompt_chars=3_000, max_output_tokens=500))
        await asyncio.sleep(2)
        assert not waiting.done()
        refused.settle(input_tokens=0, output_tokens=0)
        await waiting
        return loop.clock() - began_s

    assert run(scenario) == pytest.approx(2)


def test_a_call_larger_than_the_whole_share_goes_alone() -> None:
    async def scenario(loop: VirtualLoop) -> tuple[float, float]:
        budget = budget_on(loop, tokens_per_min=1_000)
        full_share(budget, loop)
        began_s = loop.clock()
        await call(budget, loop, chars=300, out=100)  # 200
        big_s = await call(budget, loop, chars=3_000, out=500)  # 1,500 > 1,000
        small_s = await call(budget, loop, chars=300, out=100)
        return big_s - began_s, small_s - began_s

    big_s, small_s = run(scenario)
    assert big_s == pytest.approx(SPAN_S)  # once the window is empty
    assert small_s == pytest.approx(2 * SPAN_S)


# Pauses and cancellations.


@pytest.mark.parametrize("limits", [{"requests_per_min": 600}, {"tokens_per_min": 100_000}])
def test_a_429_pauses_every_call_of_the_process(limits: dict[str, int]) -> None:
    async def scenario(loop: VirtualLoop) -> list[float]:
        budget = budget_on(loop, **limits)
        full_share(budget, loop)
        began_s = loop.clock()
        await call(budget, loop, chars=300, out=100)
        budget.pause(7.5)
        budget.pause(2)  # an earlier end does not shorten it
        starts = await asyncio.gather(*(call(budget, loop, chars=300, out=100) for _ in range(3)))
        return [s - began_s for s in starts]

    starts = run(scenario)
    assert min(starts) >= 7.5 - 1e-6
    assert max(starts) < 7.5 + 1.0
    assert run(scenario) == starts  # deterministic


def test_a_call_cancelled_while_it_waits_frees_its_tokens() -> None:
    async def scenario(loop: VirtualLoop) -> float:
        budget = budget_on(loop, requests_per_min=6, tokens_per_min=2_000)
        full_share(budget, loop)
        first_s = await call(budget, loop, chars=1_500, out=500)  # 875 tokens; next slot in 10.2 s
        waiting_for_slot = asyncio.create_task(budget.acquire(prompt_chars=1_500, max_output_tokens=500))
        await asyncio.sleep(1)
        waiting_for_tokens = asyncio.create_task(budget.acquire(prompt_chars=1_500, max_output_tokens=500))
        await asyncio.sleep(1)
        assert not waiting_for_tokens.done()
        waiting_for_slot.cancel()
        await asyncio.sleep(0)
        await waiting_for_tokens
        return loop.clock() - first_s

    # The freed tokens let it through, in the slot the cancelled call had.
    assert run(scenario) == pytest.approx(10.2)


def test_an_unlimited_budget_never_waits() -> None:
    async def scenario(loop: VirtualLoop) -> float:
        budget = Unlimited()
        began_s = loop.clock()
        for _ in range(100):
            ticket = await budget.acquire(prompt_chars=10_000, max_output_tokens=10_000)
            ticket.settle(input_tokens=1, output_tokens=1)
        budget.pause(10)
        return loop.clock() - began_s

    assert run(scenario) == 0
