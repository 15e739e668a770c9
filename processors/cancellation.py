"""Releasing a claim when a job is cut off (shutdown, a revoked partition)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

log = logging.getLogger(__name__)

RELEASE_TIMEOUT_S = 5.0


async def release_on_cancel(release: Awaitable[None]) -> None:
    """Run `release` to its end although the caller is being cancelled, for at most a few seconds.

    If it can't finish in time the claim simply expires with its lease: nothing is lost.
    """
    task = asyncio.ensure_future(release)
    with contextlib.suppress(asyncio.CancelledError):
        # Shielded: the cancellation that interrupted the job must not interrupt its release.
        await asyncio.shield(asyncio.wait_for(task, RELEASE_TIMEOUT_S))
    if task.done() and not task.cancelled() and task.exception() is not None:
        log.warning("could not release an interrupted job's claim: %r", task.exception())
