"""The deadline loop, on a fake clock: when it stops, what it reports, and how long attempts may take."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scripts.devservices.readiness import Readiness
from scripts.devservices.waiting import MIN_ATTEMPT_S, Outcome, process_alive, wait_until_ready
from tests.polling import eventually

NOT_YET = Readiness(False, "nothing listens at 127.0.0.1:9092 (connection refused)")
READY = Readiness(True, "1 broker(s), 0 topic(s)")


class FakeTime:
    """A clock that only moves when the code under test sleeps or a fake check takes time."""

    def __init__(self) -> None:
        self.now_s = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds


class ScriptedCheck:
    """Answers from a script; each attempt takes `attempt_s` of fake time (at most its timeout)."""

    def __init__(self, time: FakeTime, answers: list[Readiness], attempt_s: float = 0.0) -> None:
        self.time = time
        self.answers = answers
        self.attempt_s = attempt_s
        self.timeouts: list[float] = []

    async def __call__(self, timeout_s: float) -> Readiness:
        self.timeouts.append(timeout_s)
        self.time.now_s += min(self.attempt_s, timeout_s)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


async def test_a_server_that_answers_at_once_is_ready_after_one_attempt_and_no_sleep() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, [READY])

    result = await wait_until_ready(check, timeout_s=60, clock=time.clock, sleep=time.sleep)

    assert (result.outcome, result.attempts, result.last) == (Outcome.READY, 1, READY)
    assert time.sleeps == []


async def test_polls_every_interval_until_the_server_answers() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, [NOT_YET, NOT_YET, READY])

    result = await wait_until_ready(check, timeout_s=60, interval_s=0.3, clock=time.clock, sleep=time.sleep)

    assert result.outcome is Outcome.READY
    assert result.attempts == 3
    assert time.sleeps == [0.3, 0.3]
    assert result.elapsed_s == pytest.approx(0.6)


async def test_stops_at_the_deadline_with_the_last_reason() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, [NOT_YET], attempt_s=1.0)

    result = await wait_until_ready(
        check, timeout_s=10, interval_s=0.5, attempt_timeout_s=3, clock=time.clock, sleep=time.sleep
    )

    assert result.outcome is Outcome.DEADLINE_PASSED
    assert result.last == NOT_YET
    assert 10 <= result.elapsed_s < 10.5


async def test_no_attempt_runs_past_the_deadline() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, [NOT_YET], attempt_s=100.0)  # every attempt uses its whole timeout

    result = await wait_until_ready(
        check, timeout_s=7, interval_s=0.5, attempt_timeout_s=3, clock=time.clock, sleep=time.sleep
    )

    assert result.outcome is Outcome.DEADLINE_PASSED
    assert 7 <= result.elapsed_s <= 7 + MIN_ATTEMPT_S
    assert check.timeouts[0] == 3
    assert check.timeouts[-1] < 3  # the last attempt only got what was left
    assert all(s <= 0.5 for s in time.sleeps)


async def test_a_process_that_exits_ends_the_wait_at_once() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, [NOT_YET])
    alive = iter([True, True, False])

    result = await wait_until_ready(
        check, timeout_s=180, alive=lambda: next(alive), clock=time.clock, sleep=time.sleep
    )

    assert result.outcome is Outcome.PROCESS_EXITED
    assert result.attempts == 3
    assert result.elapsed_s < 1


async def test_an_answer_wins_over_a_process_that_just_exited() -> None:
    # The check saw it ready: say so, even if the pid is gone by now (e.g. a wrapper that exec'd).
    time = FakeTime()

    result = await wait_until_ready(
        ScriptedCheck(time, [READY]), timeout_s=5, alive=lambda: False, clock=time.clock, sleep=time.sleep
    )

    assert result.outcome is Outcome.READY


async def test_reports_progress_about_every_period_not_every_attempt() -> None:
    time = FakeTime()
    check = ScriptedCheck(time, [NOT_YET], attempt_s=0.7)
    reports: list[tuple[float, Readiness]] = []

    await wait_until_ready(
        check,
        timeout_s=35,
        interval_s=0.3,
        progress=lambda elapsed_s, last: reports.append((elapsed_s, last)),
        progress_every_s=10,
        clock=time.clock,
        sleep=time.sleep,
    )

    assert [int(elapsed_s // 10) for elapsed_s, _ in reports] == [1, 2, 3]
    assert all(last == NOT_YET for _, last in reports)


async def test_a_non_positive_progress_period_is_refused() -> None:
    with pytest.raises(ValueError, match="progress_every_s"):
        await wait_until_ready(ScriptedCheck(FakeTime(), [READY]), timeout_s=1, progress_every_s=0)


def test_this_process_is_alive() -> None:
    import os

    assert process_alive(os.getpid())


async def test_an_exited_process_is_not_alive_even_before_its_parent_reaps_it() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # Not reaped yet: a zombie, which `kill -0` still finds.
        await eventually(lambda: not process_alive(child.pid), timeout_s=10, what="the child to exit")
    finally:
        child.wait()
    assert not process_alive(child.pid)
