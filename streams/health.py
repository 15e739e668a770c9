"""`GET /healthz` (the process answers) and `GET /readyz` (the broker and the store answer).

Readiness is checked in the background every `CHECK_INTERVAL_S` and cached, so a probe
costs nothing and never waits on a server: `/readyz` turns 503 at most
`CHECK_INTERVAL_S + CHECK_TIMEOUT_S` after a server stops answering, and 200 again at the
first check after it is back.

A check that takes longer than `CHECK_TIMEOUT_S` counts as failing but is not cancelled:
it runs on, and the next rounds wait for it rather than start another. Cancelling a
driver call can break the client for good (an `AsyncMongoClient` on Python 3.11 can be
left holding its topology lock, and then no store call of the process ever ends), so a
check must bound itself, by its client's own timeouts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 3.0
CHECK_TIMEOUT_S = 4.0

Check = Callable[[], Awaitable[bool]]
"""True when the dependency answers; may raise (counts as not answering). Never cancelled:
it must end on its own, within its client's timeouts."""

AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Readiness:
    """Runs `checks` (by name) in the background; `ready` once all passed the last time."""

    def __init__(
        self,
        checks: Mapping[str, Check],
        *,
        interval_s: float = CHECK_INTERVAL_S,
        timeout_s: float = CHECK_TIMEOUT_S,
    ) -> None:
        self._checks = dict(checks)
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self.results: dict[str, bool] = dict.fromkeys(self._checks, False)
        self._checked = False
        self._task: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Future[bool]] = {}
        """Checks started and not answered yet, by name: one that overran a round runs on into the next."""

    @property
    def ready(self) -> bool:
        return self._task is not None and all(self.results.values())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="readiness")

    async def stop(self) -> None:
        """Stop checking. A check still running is left to end on its own, not cancelled."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for check in self._running.values():
            check.add_done_callback(_retrieve)
        self._running.clear()

    async def check_once(self) -> None:
        names = list(self._checks)
        answers = await asyncio.gather(*(self._answer(name) for name in names))
        for name, answer in zip(names, answers, strict=True):
            if answer != self.results[name] and (self._checked or not answer):
                log.log(
                    logging.INFO if answer else logging.WARNING,
                    "readiness: %s %s",
                    name,
                    "answers again" if answer else "does not answer",
                )
            self.results[name] = answer
        self._checked = True

    async def _answer(self, name: str) -> bool:
        """The check's answer within the timeout; False if it raised or has not answered yet."""
        running = self._running.get(name)
        if running is None:
            try:
                running = self._running[name] = asyncio.ensure_future(self._checks[name]())
            except Exception:
                return False
        # Waits without cancelling: a check still running at the timeout runs on.
        await asyncio.wait({running}, timeout=self._timeout_s)
        if not running.done():
            return False
        del self._running[name]
        if running.cancelled():
            return False
        try:
            return bool(running.result())
        except Exception:
            return False

    async def _run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self._interval_s)


def _retrieve(check: asyncio.Future[bool]) -> None:
    """The end of a check nobody waits for any more: its error is retrieved, and dropped."""
    if not check.cancelled():
        check.exception()


def healthz() -> AsgiApp:
    """200 while the event loop runs: the process is alive."""

    async def alive(scope: Scope, receive: Receive, send: Send) -> None:
        if not await _only_get(scope, receive, send):
            await PlainTextResponse("ok\n")(scope, receive, send)

    return alive


def readyz(readiness: Readiness) -> AsgiApp:
    """200 while every check passed the last time, else 503; the body names each check's state."""

    async def ready(scope: Scope, receive: Receive, send: Send) -> None:
        if await _only_get(scope, receive, send):
            return
        body: dict[str, Any] = {
            "ready": readiness.ready,
            "checks": {name: "ok" if ok else "failing" for name, ok in readiness.results.items()},
        }
        await JSONResponse(body, status_code=200 if readiness.ready else 503)(scope, receive, send)

    return ready


async def _only_get(scope: Scope, receive: Receive, send: Send) -> bool:
    """Answer 405 to anything but GET and HEAD; True if it did."""
    if scope.get("method") in ("GET", "HEAD"):
        return False
    await Response(status_code=405, headers={"Allow": "GET"})(scope, receive, send)
    return True
