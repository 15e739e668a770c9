"""A FastStream middleware that turns a job's failure into a retry or a dead letter.

It sits on a consumed topic's router (never on the whole broker, so the retry machinery
never reprocesses its own output). Parsing and handler errors both reach it. Once the
retry or dead-letter record is acknowledged by the broker, the failure is suppressed,
so the origin offset is committed. If that publish fails, the error propagates and the
record is read again, not lost.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any

from faststream import BaseMiddleware
from faststream._internal.context.repository import ContextRepo

from processors.errors import JobError, TransientError
from streams.retry.record import RawRecord
from streams.retry.routing import FailureRouter, JobRoute
from streams.tracing import trace_continued

log = logging.getLogger(__name__)

ROUTING_FAILURE_PAUSE_S = 1.0


class FailureMiddleware:
    """Middleware factory: `KafkaRouter(middlewares=[FailureMiddleware(router, route)])`."""

    def __init__(self, router: FailureRouter, route: JobRoute) -> None:
        self.router = router
        self.route = route

    def __call__(self, msg: Any, /, *, context: ContextRepo) -> _RouteFailures:
        return _RouteFailures(msg, context=context, factory=self)


class _RouteFailures(BaseMiddleware):
    def __init__(self, msg: Any, /, *, context: ContextRepo, factory: FailureMiddleware) -> None:
        super().__init__(msg, context=context)
        self._factory = factory

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        if exc_val is None or not isinstance(exc_val, Exception):
            return False  # success, or cancellation: nothing to route
        if isinstance(exc_val, JobError):
            error = exc_val
        else:
            log.exception("unexpected error while processing a job", exc_info=exc_val)
            error = TransientError(f"unexpected {type(exc_val).__name__}", error_class="UnexpectedError")
        record = RawRecord.from_consumer_record(self.msg)
        try:
            # No span is current once the handler has raised: the retry or dead letter
            # continues the job's trace under its consumer span (or from its headers).
            with trace_continued(record.headers, span=self.context.get_local("span")):
                await self._factory.router.route(self._factory.route, record, error)
        except Exception:
            log.exception("could not route failed job %s; it will be read again", record)
            # Pause so a broker outage does not turn into a hot loop of re-reads.
            await asyncio.sleep(ROUTING_FAILURE_PAUSE_S)
            raise
        return True
