"""How the worker logs: configured once at start from `WorkerSettings`.

`LOG_FORMAT=text` (the default) or `json` (`streams.logformat`). While a job is handled,
its lines carry its `job_id`, topic, partition, offset and attempt: the broker middleware
below makes the record's `JobContext` current when it arrives. Each record runs in its own
task (`streams.dispatch`), so each job has its own context.
"""

from __future__ import annotations

import contextvars
from types import TracebackType
from typing import Any

from faststream import BaseMiddleware

from streams.logformat import JobContext, enter_job, leave_job, setup_logging
from streams.retry.headers import ATTEMPT, decode_headers
from streams.settings import WorkerSettings


def configure_logging(worker: WorkerSettings) -> None:
    setup_logging(worker.log_level, worker.log_format)


def job_context(record: Any) -> JobContext | None:
    """From an aiokafka `ConsumerRecord` (or FastStream's in-memory test record); `attempt`
    counts this one: the `x-attempt` header (attempts made before) plus one."""
    topic = getattr(record, "topic", None)
    if not isinstance(topic, str):
        return None  # a batch, or no record at all
    body = record.value
    if isinstance(body, str):
        body = body.encode()
    try:
        attempts_before = int(decode_headers(record.headers).get(ATTEMPT, "0"))
    except ValueError:
        attempts_before = 0
    return JobContext(
        topic=topic,
        partition=int(record.partition or 0),
        offset=int(record.offset or 0),
        attempt=max(0, attempts_before) + 1,
        body=body if isinstance(body, bytes) else b"",
    )


class JobLogContext(BaseMiddleware):
    """Makes the record's `JobContext` current while the job is handled."""

    def __init__(self, msg: Any, /, **kwargs: Any) -> None:
        super().__init__(msg, **kwargs)
        self._token: contextvars.Token[JobContext | None] | None = None

    async def on_receive(self) -> None:
        self._token = enter_job(job_context(self.msg))

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        if self._token is not None:
            leave_job(self._token)
            self._token = None
        return False


def log_context_middlewares() -> list[Any]:
    """Broker middlewares that put the job's fields (job_id, topic, ...) on its log records."""
    return [JobLogContext]
