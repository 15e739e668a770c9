"""A readiness check that overruns its timeout fails the round, but is never cancelled.

Cancelling the store's ping mid-way can break the store client for good (Python 3.11,
see `streams.health`), so a slow check runs on and the next rounds wait for it.
"""

from __future__ import annotations

import asyncio

from streams.health import Readiness
from tests.polling import eventually


class SlowPing:
    """Answers True when released; counts its calls and cancellations."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = 0
        self.release = asyncio.Event()

    async def __call__(self) -> bool:
        self.calls += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return True


async def test_a_check_past_its_timeout_fails_the_round_runs_on_and_is_not_started_twice() -> None:
    ping = SlowPing()
    readiness = Readiness({"store": ping}, timeout_s=0.05)

    await readiness.check_once()
    await readiness.check_once()

    assert readiness.results == {"store": False}
    assert (ping.calls, ping.cancelled) == (1, 0)

    ping.release.set()
    await readiness.check_once()
    assert readiness.results == {"store": True}
    await readiness.check_once()
    assert ping.calls == 2  # answered: the next round starts a new check


async def test_stop_leaves_a_running_check_to_end_on_its_own() -> None:
    ping = SlowPing()
    readiness = Readiness({"store": ping}, interval_s=0.01, timeout_s=0.05)
    readiness.start()
    await eventually(lambda: ping.calls, timeout_s=2, what="a check")

    await readiness.stop()
    ping.release.set()
    await asyncio.sleep(0)

    assert ping.cancelled == 0
    assert not readiness.ready
