"""The model's rate budget: OpenAI's requests and tokens per minute, shared by the group.

The generator asks before every model call and reports what the call used:

    ticket = await budget.acquire(prompt_chars=..., max_output_tokens=...)
    ... one model call ...
    ticket.settle(input_tokens=..., output_tokens=...)   # from the response's usage
    # or, on a 429 with retry-after:
    budget.pause(retry_after_s)                          # pauses this process's calls

`acquire` waits until this process's share of both budgets allows the call. The account's
limits (`OPENAI_RPM`, `OPENAI_TPM`) hold for every process of the `ad-jobs` consumer
group together; each process takes the share of the `ad-jobs` partitions it owns
(`assign(owned, owners)`, told by `streams.shares.PartitionShare` at every rebalance),
without talking to the others. While the group rebalances a process owns nothing, and
its calls wait.

**Requests** are a `processors.slots.SlotBudget` at `OPENAI_RPM / 60` a second: time
slots owned by partitions, so that no rolling second (and so no rolling minute) holds
more than the group's rate, evenly spread rather than a minute's worth in one burst.

**Tokens** are a rolling window (`TokenWindow`): the calls this process started in the
last minute may hold at most its share (`owned / owners`) of `OPENAI_TPM`. A call is
charged when it is let through, with an estimate (`TokenEstimator`), and corrected when
it settles. The charge is what OpenAI counts against the limit: the prompt's tokens plus
the `max_output_tokens` the request asks for (OpenAI counts `max_tokens` when it admits
the request, whatever the answer then uses); a call refused with a 429 settles at zero
and frees its charge. A share that grows (a process that starts,
or takes over partitions) grows over a minute, not at once: the previous owner's calls
of the last minute still count at OpenAI.

A 429 pauses this process's calls until the provider's `retry-after`; the generator then
makes the same call again, without using up one of the job's attempts.

The clock and the sleep are injected, so that tests can run in virtual time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from processors.slots import DEFAULT_MARGIN_S, SlotBudget


class Ticket(Protocol):
    def settle(self, *, input_tokens: int, output_tokens: int) -> None:
        """The call's real usage: corrects the estimate charged by `acquire`. Zero for
        both: the call used nothing (refused with a 429), and frees its tokens."""


class CallBudget(Protocol):
    async def acquire(self, *, prompt_chars: int, max_output_tokens: int) -> Ticket:
        """Wait until one more call, of about this size, fits this process's share."""

    def pause(self, retry_after_s: float) -> None:
        """The provider answered 429: no call from this process starts before then."""


class _NoTicket:
    def settle(self, *, input_tokens: int, output_tokens: int) -> None:
        return None


class Unlimited:
    """No budget: every call starts at once (no OPENAI_RPM/OPENAI_TPM configured)."""

    async def acquire(self, *, prompt_chars: int, max_output_tokens: int) -> Ticket:
        return _NoTicket()

    def pause(self, retry_after_s: float) -> None:
        return None


# ------------------------------------------------------------------ token estimates

DEFAULT_TOKENS_PER_CHAR = 1 / 3
"""Before any answer: a token per 3 characters (English prose runs about 4)."""
MIN_TOKENS_PER_CHAR = 1 / 6
"""The estimate never goes below this, whatever a server reports."""
ESTIMATE_MARGIN = 1.1
"""Learned ratios are raised by 10 %."""
ESTIMATE_MEMORY = 20
"""The ratio is the highest of the last this many answers'."""


class TokenEstimator:
    """A prompt's tokens from its characters, offline (no tokenizer download).

    Starts at `DEFAULT_TOKENS_PER_CHAR`. Each answer's `usage` gives the real ratio of
    input tokens to prompt characters (it includes what the characters leave out: the
    response schema, the messages' framing); from then on the estimate is the highest
    ratio of the last `ESTIMATE_MEMORY` answers plus `ESTIMATE_MARGIN`, and never below
    `MIN_TOKENS_PER_CHAR`.
    """

    def __init__(self) -> None:
        self.tokens_per_char = DEFAULT_TOKENS_PER_CHAR
        self._seen: deque[float] = deque(maxlen=ESTIMATE_MEMORY)

    def prompt_tokens(self, prompt_chars: int) -> int:
        return math.ceil(max(0, prompt_chars) * self.tokens_per_char)

    def observe(self, prompt_chars: int, input_tokens: int) -> None:
        if prompt_chars <= 0 or input_tokens <= 0:
            return  # no usage reported: nothing learned
        self._seen.append(input_tokens / prompt_chars)
        self.tokens_per_char = max(MIN_TOKENS_PER_CHAR, max(self._seen) * ESTIMATE_MARGIN)


# ------------------------------------------------------------------ the token window

WINDOW_S = 60.0
WINDOW_MARGIN_S = 1.0
"""A charge counts this much longer than the minute: the provider sees the call a little
after it starts here."""
RAMP_S = 60.0
"""A share that grows reaches its new size over this long."""
_TOLERANCE_S = 1e-6  # float rounding at epoch scale


class Charge:
    """The tokens one call holds in the window: pending until the call starts."""

    __slots__ = ("_window", "start_s", "tokens")

    def __init__(self, window: TokenWindow, tokens: int) -> None:
        self._window = window
        self.tokens = tokens
        self.start_s: float | None = None

    def start(self, at_s: float) -> None:
        """The call starts at `at_s`: the charge leaves the window a minute later."""
        self.start_s = at_s
        self._window.changed()

    def correct(self, tokens: int) -> None:
        self.tokens = max(0, tokens)
        self._window.changed()

    def cancel(self) -> None:
        """The call never started: its tokens are free again."""
        self._window.drop(self)


@dataclass(frozen=True)
class WindowStats:
    capacity: float  # this process's share now, tokens per minute
    charged: int  # tokens in the window now, pending calls included
    waited_s: float


class TokenWindow:
    """This process's share of a tokens-per-minute limit, over a rolling minute.

    Calls are let through in arrival order, each once its charge fits: the charges of
    the calls started in the last `window_s + margin_s` seconds, plus those let through
    and not yet started, plus its own, at most this process's capacity. The capacity is
    `tokens_per_min * owned / owners`; after `assign` it grows towards a larger share
    linearly over `ramp_s` (from the share held before, or from nothing in a new
    process) and drops to a smaller one at once. A call larger than the whole share goes
    alone, when the window is empty. `pause_until` holds every call until then.
    """

    def __init__(
        self,
        tokens_per_min: int,
        *,
        window_s: float = WINDOW_S,
        margin_s: float = WINDOW_MARGIN_S,
        ramp_s: float = RAMP_S,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if tokens_per_min <= 0:
            raise ValueError(f"tokens_per_min must be positive, not {tokens_per_min}")
        self.tokens_per_min = tokens_per_min
        self.span_s = window_s + margin_s
        self.ramp_s = ramp_s
        self._clock = clock
        self._sleep = sleep
        self._charges: list[Charge] = []
        self._queue = asyncio.Lock()  # first come, first served
        self._nudge: asyncio.Future[None] | None = None
        self._paused_until_s: float | None = None
        # The capacity: `_from` at `_ramp_start_s`, growing linearly to `_target`.
        self._owning = False
        self._target = 0.0
        self._from = 0.0
        self._ramp_start_s = 0.0
        self._held = 0.0  # the capacity when the last rebalance took the share away
        self._waited_s = 0.0

    def assign(self, owned: Collection[int], owners: int) -> None:
        """This process now owns `owned` of `owners` partitions (after a rebalance)."""
        if owners < 1:
            raise ValueError(f"owners must be at least 1, not {owners}")
        now_s = self._clock()
        before = self.capacity(now_s) if self._owning else self._held
        if not owned:
            if self._owning:
                self._held = before
            self._owning = False
        else:
            target = self.tokens_per_min * len(set(owned)) / owners
            self._owning = True
            self._target = target
            self._from = min(before, target)
            self._ramp_start_s = now_s
        self.changed()

    def capacity(self, at_s: float) -> float:
        """Tokens this process may hold in the window at `at_s`."""
        if not self._owning:
            return 0.0
        if self.ramp_s <= 0 or at_s >= self._ramp_start_s + self.ramp_s:
            return self._target
        grown = max(0.0, at_s - self._ramp_start_s) / self.ramp_s
        return self._from + (self._target - self._from) * grown

    def pause_until(self, at_s: float) -> None:
        if self._paused_until_s is None or at_s > self._paused_until_s:
            self._paused_until_s = at_s

    async def reserve(self, tokens: int) -> Charge:
        """Wait until `tokens` fit; the charge, pending until `Charge.start`."""
        entered_s = self._clock()
        try:
            async with self._queue:
                while True:
                    now_s = self._clock()
                    self._expire(now_s)
                    at_s = self._fits_at(now_s, tokens)
                    if at_s is not None and at_s - now_s <= _TOLERANCE_S:
                        charge = Charge(self, tokens)
                        self._charges.append(charge)
                        return charge
                    await self._doze(None if at_s is None else at_s - now_s)
        finally:
            self._waited_s += self._clock() - entered_s

    def stats(self) -> WindowStats:
        now_s = self._clock()
        self._expire(now_s)
        return WindowStats(
            capacity=self.capacity(now_s),
            charged=sum(c.tokens for c in self._charges),
            waited_s=self._waited_s,
        )

    def changed(self) -> None:
        """Something freed tokens, or may have: the waiting call looks again."""
        if self._nudge is not None and not self._nudge.done():
            self._nudge.set_result(None)

    def drop(self, charge: Charge) -> None:
        if charge in self._charges:
            self._charges.remove(charge)
            self.changed()

    def _expire(self, now_s: float) -> None:
        self._charges = [c for c in self._charges if c.start_s is None or c.start_s + self.span_s > now_s]

    def _when_capacity(self, tokens: float) -> float | None:
        """The first time the capacity reaches `tokens` (None: never, as things stand)."""
        if not self._owning or tokens > self._target:
            return None
        if tokens <= self._from or self.ramp_s <= 0:
            return -math.inf
        return self._ramp_start_s + (tokens - self._from) / (self._target - self._from) * self.ramp_s

    def _fits_at(self, now_s: float, tokens: int) -> float | None:
        """The first time a charge of `tokens` fits, if nothing else changes (None: not
        until something does: a pending call starts, a share comes back)."""
        pending = sum(c.tokens for c in self._charges if c.start_s is None)
        started = sorted((c.start_s + self.span_s, c.tokens) for c in self._charges if c.start_s is not None)
        in_window = pending + sum(held for _, held in started)
        not_before = max(now_s, self._paused_until_s or now_s)
        segment_start = now_s
        for leaves_s, held in [*started, (math.inf, 0)]:
            # From `segment_start` until `leaves_s`, the window holds `in_window`.
            if leaves_s == math.inf and in_window == 0 and tokens > self._target:
                reached = self._when_capacity(self._target)  # too big for the share: alone
            else:
                reached = self._when_capacity(in_window + tokens)
            if reached is not None:
                at_s = max(segment_start, not_before, reached)
                if at_s < leaves_s:
                    return at_s
            segment_start = max(segment_start, leaves_s)
            in_window -= held
        return None

    async def _doze(self, delay_s: float | None) -> None:
        """Sleep `delay_s` (None: until nudged), or until nudged."""
        nudge: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._nudge = nudge
        sleeper = None if delay_s is None else asyncio.ensure_future(self._sleep(delay_s))
        try:
            waits: set[asyncio.Future[None]] = {nudge} if sleeper is None else {nudge, sleeper}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._nudge = None
            if sleeper is not None:
                sleeper.cancel()


# ------------------------------------------------------------------ the budget


@dataclass(frozen=True)
class ModelBudgetStats:
    calls: int
    paused: int  # 429s that paused this process
    waited_s: float  # total time calls waited for the budget
    tokens_per_char: float  # the estimate's ratio now


class _Ticket:
    __slots__ = ("_budget", "_charge", "_max_output_tokens", "_prompt_chars", "_settled")

    def __init__(
        self, budget: ModelBudget, charge: Charge | None, prompt_chars: int, max_output_tokens: int
    ) -> None:
        self._budget = budget
        self._charge = charge
        self._prompt_chars = prompt_chars
        self._max_output_tokens = max_output_tokens
        self._settled = False

    def settle(self, *, input_tokens: int, output_tokens: int) -> None:
        if self._settled:
            return
        self._settled = True
        if input_tokens <= 0 and output_tokens <= 0:
            # Refused before any work (a 429): OpenAI counted nothing.
            if self._charge is not None:
                self._charge.correct(0)
            return
        estimator = self._budget.estimator
        estimator.observe(self._prompt_chars, input_tokens)
        if self._charge is not None:
            prompt = input_tokens if input_tokens > 0 else estimator.prompt_tokens(self._prompt_chars)
            # OpenAI counted the requested output tokens when it admitted the call.
            self._charge.correct(prompt + max(output_tokens, self._max_output_tokens))


class ModelBudget:
    """Requests (`requests_per_min`) and tokens (`tokens_per_min`) per minute for the group;
    0 leaves that one unlimited. Call `assign` at every rebalance: until the first, this
    process owns nothing and its calls wait."""

    def __init__(
        self,
        *,
        requests_per_min: int = 0,
        tokens_per_min: int = 0,
        margin_s: float = DEFAULT_MARGIN_S,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if requests_per_min < 0 or tokens_per_min < 0:
            raise ValueError("requests_per_min and tokens_per_min must be 0 (no limit) or more")
        self._clock = clock
        self.requests = (
            SlotBudget(requests_per_min / 60, margin_s=margin_s, clock=clock, sleep=sleep)
            if requests_per_min
            else None
        )
        self.tokens = TokenWindow(tokens_per_min, clock=clock, sleep=sleep) if tokens_per_min else None
        self.estimator = TokenEstimator()
        self._calls = 0
        self._paused = 0
        self._waited_s = 0.0

    def assign(self, owned: Collection[int], owners: int) -> None:
        if self.requests is not None:
            self.requests.assign(owned, owners)
        if self.tokens is not None:
            self.tokens.assign(owned, owners)

    def estimate(self, *, prompt_chars: int, max_output_tokens: int) -> int:
        """The tokens a call is charged before its answer: what OpenAI counts at admission."""
        return self.estimator.prompt_tokens(prompt_chars) + max(0, max_output_tokens)

    async def acquire(self, *, prompt_chars: int, max_output_tokens: int) -> Ticket:
        entered_s = self._clock()
        charge = None
        try:
            if self.tokens is not None:
                tokens = self.estimate(prompt_chars=prompt_chars, max_output_tokens=max_output_tokens)
                charge = await self.tokens.reserve(tokens)
            started_s = await self.requests.acquire() if self.requests is not None else self._clock()
        except BaseException:
            if charge is not None:
                charge.cancel()
            raise
        finally:
            self._waited_s += self._clock() - entered_s
        if charge is not None:
            charge.start(started_s)
        self._calls += 1
        return _Ticket(self, charge, prompt_chars, max_output_tokens)

    def pause(self, retry_after_s: float) -> None:
        until_s = self._clock() + max(0.0, retry_after_s)
        self._paused += 1
        if self.requests is not None:
            self.requests.pause_until(until_s)
        if self.tokens is not None:
            self.tokens.pause_until(until_s)

    def stats(self) -> ModelBudgetStats:
        return ModelBudgetStats(
            calls=self._calls,
            paused=self._paused,
            waited_s=self._waited_s,
            tokens_per_char=self.estimator.tokens_per_char,
        )
