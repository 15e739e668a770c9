"""Log lines as text or as one JSON object each, carrying the fields of the job being handled.

Shared by the worker (`streams.logs`) and the live notifier, so it imports only the
standard library and `processors.ids`. While a job is handled, `current_job()` is its
`JobContext` (a context variable, set by `streams.logs.JobLogContext`); the handler's
`JobContextFilter` copies its fields onto every record, whichever logger wrote it.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from processors.ids import is_job_id

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that install handlers of their own (FastStream at import, uvicorn from its
# config): their lines go through our handler instead, in our format.
FOREIGN_LOGGERS = (
    "faststream",
    "faststream.access",
    "faststream.access.kafka",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
)
# Libraries whose DEBUG lines print what must never be logged: aiokafka every produced
# record's value (OTP codes), pymongo every command's documents (addresses), the HTTP
# clients and the OpenAI SDK requests and their bodies. They log at INFO at the most
# verbose, so LOG_LEVEL=DEBUG shows the worker's own debug lines and FastStream's.
QUIET_LIBRARIES = ("aiokafka", "pymongo", "httpcore", "httpx", "openai")
# A body larger than this is not parsed for its job_id (the worker refuses it anyway).
MAX_PARSED_BODY_BYTES = 1024 * 1024

_JOB_ATTRIBUTE = "job"


class JobContext:
    """Where the job being handled came from. Its `job_id` is read from the body only
    when a line is logged, and then once."""

    def __init__(self, *, topic: str, partition: int, offset: int, attempt: int, body: bytes) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.attempt = attempt
        self._body = body

    @functools.cached_property
    def job_id(self) -> str | None:
        return job_id_of(self._body)

    def fields(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "attempt": self.attempt,
        }

    def __repr__(self) -> str:  # the body may hold an OTP code: never print it
        return f"JobContext({self.topic}[{self.partition}]@{self.offset}, attempt {self.attempt})"


def job_id_of(body: bytes) -> str | None:
    """The top-level `job_id` of a JSON job if it is a valid one; None for anything else."""
    if len(body) > MAX_PARSED_BODY_BYTES or not body.lstrip().startswith(b"{"):
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    job_id = data.get("job_id") if isinstance(data, dict) else None
    return job_id if isinstance(job_id, str) and is_job_id(job_id) else None


_current_job: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("job", default=None)


def current_job() -> JobContext | None:
    return _current_job.get()


def enter_job(job: JobContext | None) -> contextvars.Token[JobContext | None]:
    """Make `job` the current one, until `leave_job(token)`."""
    return _current_job.set(job)


def leave_job(token: contextvars.Token[JobContext | None]) -> None:
    _current_job.reset(token)


class JobContextFilter(logging.Filter):
    """Adds the fields of the job being handled (None outside a job) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = _current_job.get()
        setattr(record, _JOB_ATTRIBUTE, None if job is None else job.fields())
        return True


def _job_fields(record: logging.LogRecord) -> dict[str, Any] | None:
    fields = getattr(record, _JOB_ATTRIBUTE, None)
    return fields if isinstance(fields, dict) else None


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [job_id=ID topic[partition]@offset attempt=N]`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        job = _job_fields(record)
        if job is None:
            return line
        return (
            f"{line} [job_id={job['job_id'] or '-'} {job['topic']}[{job['partition']}]"
            f"@{job['offset']} attempt={job['attempt']}]"
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time` (UTC, RFC 3339), `level`, `logger`, `message`, the
    job's fields while one is handled, and `exception` / `stack` when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "time": created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{created.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job = _job_fields(record)
        if job is not None:
            entry.update(job)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def formatter_for(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler `setup_logging` installs on the root logger (replaced, never doubled)."""


def setup_logging(
    level: str,
    log_format: LogFormat,
    *,
    stream: TextIO | None = None,
    foreign_loggers: Iterable[str] = FOREIGN_LOGGERS,
    quiet_libraries: Iterable[str] = QUIET_LIBRARIES,
) -> None:
    """The root logger at `level`, writing `log_format` to `stream` (stderr). Call it again
    to change either: the handler is replaced."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    handler = _OurHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter_for(log_format))
    handler.addFilter(JobContextFilter())
    root.addHandler(handler)
    root.setLevel(level)
    for name in quiet_libraries:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    for name in foreign_loggers:
        logger = logging.getLogger(name)
        # uvicorn run with `access_log=False` leaves "uvicorn.access" with no handler and
        # not propagating, and logs requests only if that logger finds a handler: a logger
        # with no handlers of its own is left as it is.
        if logger.handlers:
            for foreign in list(logger.handlers):
                logger.removeHandler(foreign)
            logger.propagate = True
            logger.setLevel(logging.NOTSET)
