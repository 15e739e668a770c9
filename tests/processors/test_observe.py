"""`timed_call`: the observer hears how long a provider call took and how it ended."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest

from processors.errors import PermanentError, TransientError
from processors.observe import timed_call


class Heard:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, str]] = []

    def call_finished(self, operation: str, duration_s: float, outcome: str) -> None:
        self.calls.append((operation, duration_s, outcome))


def ticking(*times_s: float) -> Callable[[], float]:
    ticks = iter(times_s)
    return lambda: next(ticks)


@pytest.mark.parametrize(
    ("raised", "outcome"),
    [
        (None, "ok"),
        (TransientError("timed out"), "transient"),
        (PermanentError("refused"), "permanent"),
        (RuntimeError("a bug"), "error"),
    ],
)
def test_the_observer_hears_the_duration_and_the_kind_of_ending(
    raised: Exception | None, outcome: str
) -> None:
    heard = Heard()
    expected = pytest.raises(type(raised)) if raised is not None else contextlib.nullcontext()
    with expected, timed_call(heard, "send", clock_s=ticking(10.0, 10.25)):
        if raised is not None:
            raise raised
    assert heard.calls == [("send", 0.25, outcome)]


def test_without_an_observer_nothing_is_timed() -> None:
    with timed_call(None, "send", clock_s=ticking()):
        pass
