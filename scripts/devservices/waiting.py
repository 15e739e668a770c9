"""Polling a readiness check until it passes, the process dies, or a deadline passes."""

from __future__ import annotations

import asyncio
import enum
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from scripts.devservices.readiness import Readiness

MIN_ATTEMPT_S = 0.05


class Outcome(enum.Enum):
    READY = "ready"
    PROCESS_EXITED = "process exited"
    DEADLINE_PASSED = "deadline passed"


@dataclass(frozen=True)
class WaitResult:
    outcome: Outcome
    elapsed_s: float
    attempts: int
    last: Readiness


async def wait_until_ready(
    check: Callable[[float], Awaitable[Readiness]],
    *,
    timeout_s: float,
    alive: Callable[[], bool] = lambda: True,
    interval_s: float = 0.3,
    attempt_timeout_s: float = 3.0,
    progress: Callable[[float, Readiness], None] | None = None,
    progress_every_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> WaitResult:
    """Call `check(attempt_timeout_s)` every `interval_s` until it reports ready.

    No attempt runs past the deadline (give or take `MIN_ATTEMPT_S`): the last one gets
    only the time that is left.
    `alive` is asked after every failed attempt, so a server that dies during start-up
    is reported at once instead of after the whole timeout.
    """
    if progress_every_s <= 0:
        raise ValueError("progress_every_s must be positive")
    start_s = clock()
    deadline_s = start_s + timeout_s
    next_progress_s = start_s + progress_every_s
    attempts = 0
    while True:
        left_s = deadline_s - clock()
        last = await check(max(min(attempt_timeout_s, left_s), MIN_ATTEMPT_S))
        attempts += 1
        now_s = clock()
        if last.ready:
            return WaitResult(Outcome.READY, now_s - start_s, attempts, last)
        if not alive():
            return WaitResult(Outcome.PROCESS_EXITED, now_s - start_s, attempts, last)
        if now_s >= deadline_s:
            return WaitResult(Outcome.DEADLINE_PASSED, now_s - start_s, attempts, last)
        if progress is not None and now_s >= next_progress_s:
            progress(now_s - start_s, last)
            while next_progress_s <= now_s:
                next_progress_s += progress_every_s
        await sleep(min(interval_s, deadline_s - now_s))


def process_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self/stat").exists()  # no procfs: kill -0 is all there is
    except OSError:
        return True
    # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last ")".
    return stat.rpartition(")")[2].split()[0] != "Z"
