"""The failure router: where a failed record goes, with which headers, and in which order."""

from __future__ import annotations

import pytest

from processors.errors import JobError, PermanentError, PoisonMessage, TransientError
from streams.retry import headers as h
from streams.retry.policy import BackoffPolicy, DeadLetter, RetryIn
from streams.retry.record import RawRecord
from streams.retry.routing import FailureRouter, JobRoute
from streams.topics import JobTopics

NOW_MS = 1_700_000_000_000


class Topic:
    def __init__(self, events: list[str], name: str, fail: bool = False) -> None:
        self.records: list[tuple[bytes, bytes | None, dict[str, str]]] = []
        self._events = events
        self._name = name
        self.fail = fail

    async def __call__(self, value: bytes, key: bytes | None, headers: dict[str, str]) -> None:
        self._events.append(self._name)
        if self.fail:
            raise ConnectionError("broker down")
        self.records.append((value, key, headers))


class Fixture:
    def __init__(self, *, max_attempts: int = 3, hook_fails: bool = False) -> None:
        self.events: list[str] = []
        self.retry = Topic(self.events, "retry")
        self.dlq = Topic(self.events, "dlq")
        self.hooked: list[str] = []
        self.hook_fails = hook_fails
        self.route = JobRoute(
            JobTopics("email-jobs"),
            BackoffPolicy(max_attempts=max_attempts, base_ms=1_000, multiplier=2, cap_ms=60_000),
            retry=self.retry,
            dead_letter=self.dlq,
            on_dead_letter=self.hook,
        )
        self.router = FailureRouter(clock_ms=lambda: NOW_MS, jitter=lambda: 0.5)

    async def hook(self, record: RawRecord, error: JobError, reason: str) -> None:
        self.events.append("hook")
        if self.hook_fails:
            raise ConnectionError("results topic down")
        self.hooked.append(reason)


def record(headers: dict[str, str] | None = None) -> RawRecord:
    return RawRecord("email-jobs", 2, 41, b"ada@example.com", b'{"job_id": "j1"}', headers or {})


async def test_a_transient_failure_goes_to_the_retry_topic_with_its_due_time() -> None:
    given = Fixture()
    plan = await given.router.route(given.route, record({"traceparent": "abc"}), TransientError("x"))
    assert plan == RetryIn(500)
    [(value, key, headers)] = given.retry.records
    assert (value, key) == (b'{"job_id": "j1"}', b"ada@example.com")
    assert headers[h.ATTEMPT] == "1"
    assert headers[h.DUE_AT_MS] == str(NOW_MS + 500)
    assert headers[h.ORIGIN_TOPIC] == "email-jobs"
    assert (headers[h.ORIGIN_PARTITION], headers[h.ORIGIN_OFFSET]) == ("2", "41")
    assert headers["traceparent"] == "abc", "the producer's own headers are carried over"
    assert given.dlq.records == []


async def test_a_retried_record_keeps_where_it_was_first_read_and_counts_attempts() -> None:
    given = Fixture()
    earlier = {
        h.ATTEMPT: "1",
        h.ORIGIN_TOPIC: "email-jobs",
        h.ORIGIN_PARTITION: "0",
        h.ORIGIN_OFFSET: "7",
        h.FIRST_FAILURE_AT_MS: "5",
    }
    await given.router.route(given.route, record(earlier), TransientError("x"))
    [(_, _, headers)] = given.retry.records
    assert headers[h.ATTEMPT] == "2"
    assert (headers[h.ORIGIN_PARTITION], headers[h.ORIGIN_OFFSET], headers[h.FIRST_FAILURE_AT_MS]) == (
        "0",
        "7",
        "5",
    )


@pytest.mark.parametrize(
    ("error", "attempts_before", "reason"),
    [
        (PermanentError("422"), 0, "permanent"),
        (PoisonMessage("invalid-json", "bad"), 0, "invalid-json"),
        (TransientError("503"), 2, "attempts-exhausted"),
    ],
)
async def test_dead_letters_carry_the_reason_and_run_the_hook_first(
    error: JobError, attempts_before: int, reason: str
) -> None:
    given = Fixture(max_attempts=3)
    plan = await given.router.route(given.route, record({h.ATTEMPT: str(attempts_before)}), error)
    assert plan == DeadLetter(reason)
    [(_, _, headers)] = given.dlq.records
    assert headers[h.DLQ_REASON] == reason
    assert given.hooked == [reason]
    assert given.events == ["hook", "dlq"]


async def test_a_failing_hook_writes_no_dead_letter_so_a_second_read_writes_exactly_one() -> None:
    given = Fixture(hook_fails=True)
    with pytest.raises(ConnectionError):
        await given.router.route(given.route, record(), PermanentError("422"))
    assert given.dlq.records == []
    given.hook_fails = False
    await given.router.route(given.route, record(), PermanentError("422"))
    assert len(given.dlq.records) == 1


async def test_a_failed_publish_raises_so_the_record_is_read_again() -> None:
    given = Fixture()
    given.retry.fail = True
    with pytest.raises(ConnectionError):
        await given.router.route(given.route, record(), TransientError("x"))
