"""Log formats, and the job fields that the broker middleware puts on every line of a job."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from faststream import BaseMiddleware
from faststream.kafka import KafkaRouter, TestKafkaBroker

from streams.broker import build_broker
from streams.logformat import (
    JobContext,
    current_job,
    enter_job,
    job_id_of,
    leave_job,
    setup_logging,
)
from streams.logs import job_context, log_context_middlewares
from streams.settings import KafkaSettings

log = logging.getLogger("tests.logs")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`setup_logging` changes the root logger: put it back as pytest left it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def configured(log_format: Any, level: str = "INFO", **kwargs: Any) -> io.StringIO:
    stream = io.StringIO()
    setup_logging(level, log_format, stream=stream, **kwargs)
    return stream


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def a_job(**overrides: Any) -> JobContext:
    fields: dict[str, Any] = {
        "topic": "email-jobs",
        "partition": 2,
        "offset": 57,
        "attempt": 3,
        "body": b'{"type": "SEND_OTP", "job_id": "otp-42", "code": "123456"}',
    }
    return JobContext(**(fields | overrides))


@pytest.mark.usefixtures("restore_logging")
def test_a_json_line_has_the_record_and_the_jobs_fields() -> None:
    stream = configured("json")
    token = enter_job(a_job())
    try:
        log.info("email %s sent\nto %s", "otp-42", "a***@example.com")
    finally:
        leave_job(token)
    log.warning("between jobs")

    [during, after] = json_lines(stream)
    assert set(during) == {
        "time",
        "level",
        "logger",
        "message",
        "job_id",
        "topic",
        "partition",
        "offset",
        "attempt",
    }
    assert during["message"] == "email otp-42 sent\nto a***@example.com"
    assert (during["level"], during["logger"]) == ("INFO", "tests.logs")
    assert (during["job_id"], during["topic"], during["partition"], during["offset"], during["attempt"]) == (
        "otp-42",
        "email-jobs",
        2,
        57,
        3,
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", during["time"])
    assert set(after) == {"time", "level", "logger", "message"}
    assert "123456" not in stream.getvalue(), "the body is read for its job_id only"


@pytest.mark.usefixtures("restore_logging")
def test_a_json_line_carries_the_traceback_on_the_same_line() -> None:
    stream = configured("json")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")

    [line] = json_lines(stream)
    assert line["message"] == "failed"
    assert line["exception"].startswith("Traceback")
    assert line["exception"].endswith("ValueError: boom")


@pytest.mark.usefixtures("restore_logging")
def test_a_text_line_ends_with_the_jobs_fields() -> None:
    stream = configured("text")
    token = enter_job(a_job())
    try:
        log.info("email sent")
    finally:
        leave_job(token)
    log.info("idle")

    during, after = stream.getvalue().splitlines()
    assert during.endswith(" INFO tests.logs: email sent [job_id=otp-42 email-jobs[2]@57 attempt=3]")
    assert after.endswith(" INFO tests.logs: idle")


@pytest.mark.usefixtures("restore_logging")
def test_the_level_holds_and_a_second_setup_replaces_the_first() -> None:
    first = configured("text", level="WARNING")
    log.info("dropped")
    second = configured("json", level="DEBUG")
    log.debug("kept")

    assert first.getvalue() == ""
    assert [line["message"] for line in json_lines(second)] == ["kept"]


@pytest.mark.usefixtures("restore_logging")
def test_a_library_logger_with_its_own_handler_takes_our_format() -> None:
    library = logging.getLogger("tests.logs.library")
    own = io.StringIO()
    library.addHandler(logging.StreamHandler(own))
    library.propagate = False
    try:
        stream = configured("json", foreign_loggers=["tests.logs.library"])
        library.info("Started server process")
    finally:
        library.handlers.clear()
        library.propagate = True

    assert own.getvalue() == ""
    assert [line["message"] for line in json_lines(stream)] == ["Started server process"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"job_id": "otp-42", "code": "123456"}', "otp-42"),
        (b'  {"type": "X", "job_id": "a.b:c-1_2"}', "a.b:c-1_2"),
        (b'{"job_id": "has space"}', None),
        (b'{"job_id": 42}', None),
        (b'{"product": {"job_id": "nested"}}', None),
        (b'["job_id"]', None),
        (b"\x00\x01 definitely not json", None),
        (b"{" * 100_000, None),
        (b"", None),
    ],
)
def test_the_job_id_is_a_valid_top_level_one_or_none(body: bytes, expected: str | None) -> None:
    assert job_id_of(body) == expected


def record(headers: list[tuple[str, bytes]]) -> Any:
    return SimpleNamespace(
        topic="ad-jobs", partition=1, offset=9, value=b'{"job_id": "ad-7"}', headers=headers
    )


@pytest.mark.parametrize(
    ("headers", "attempt"),
    [([], 1), ([("x-attempt", b"2")], 3), ([("x-attempt", b"nonsense")], 1), ([("x-attempt", b"-4")], 1)],
)
def test_the_attempt_counts_the_ones_made_before(headers: list[tuple[str, bytes]], attempt: int) -> None:
    job = job_context(record(headers))
    assert job is not None
    assert job.fields() == {
        "job_id": "ad-7",
        "topic": "ad-jobs",
        "partition": 1,
        "offset": 9,
        "attempt": attempt,
    }
    assert "ad-7" not in repr(job)


async def test_each_task_sees_its_own_job() -> None:
    seen: dict[str, str | None] = {}

    async def handle(job_id: str) -> None:
        token = enter_job(a_job(body=json.dumps({"job_id": job_id}).encode()))
        try:
            await asyncio.sleep(0)  # the other job runs meanwhile
            job = current_job()
            seen[job_id] = None if job is None else job.job_id
        finally:
            leave_job(token)

    await asyncio.gather(handle("one"), handle("two"))
    assert seen == {"one": "one", "two": "two"}
    assert current_job() is None


@pytest.mark.usefixtures("restore_logging")
async def test_every_line_of_a_consumed_job_has_its_fields_and_faststreams_own_are_debug() -> None:
    broker = build_broker(KafkaSettings(), middlewares=log_context_middlewares())
    router = KafkaRouter(middlewares=[_LogsAfterTheHandler])
    seen: list[str] = []

    @router.subscriber("email-jobs")
    async def handle(body: dict[str, Any]) -> None:
        log.info("handling %s", body["job_id"])
        seen.append(body["job_id"])

    broker.include_router(router)
    stream = configured("json")
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(
            {"type": "SEND_OTP", "job_id": "otp-1", "code": "123456"},
            topic="email-jobs",
            headers={"x-attempt": "1"},
        )
    assert seen == ["otp-1"]

    lines = [line for line in json_lines(stream) if line["logger"] == "tests.logs"]
    assert [(line["message"], line["job_id"], line["attempt"]) for line in lines] == [
        ("handling otp-1", "otp-1", 2),
        ("after otp-1", "otp-1", 2),
    ]
    assert all(line["topic"] == "email-jobs" for line in lines)
    assert not any(line["logger"] == "streams.broker" for line in json_lines(stream)), "Received is DEBUG"


class _LogsAfterTheHandler(BaseMiddleware):
    """A router middleware that logs after the handler, as the failure router does."""

    async def after_processed(self, *exc: Any) -> bool | None:
        log.info("after %s", json.loads(getattr(self.msg, "value", b"{}"))["job_id"])
        return False


@pytest.mark.usefixtures("restore_logging")
def test_libraries_that_print_payloads_stay_at_info_at_debug() -> None:
    library = logging.getLogger("tests.logs.chatty")
    try:
        stream = configured("json", level="DEBUG", quiet_libraries=["tests.logs.chatty"])
        library.debug("Sending (key=b'ada@example.com' value=b'{\"code\": \"123456\"}')")
        library.info("connected")
        log.debug("ours")
    finally:
        library.setLevel(logging.NOTSET)

    assert [line["message"] for line in json_lines(stream)] == ["connected", "ours"]
