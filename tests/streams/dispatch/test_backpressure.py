"""Pause at any bound, resume only below half of every bound."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.dispatch.backpressure import Backpressure, Change, Load


def gate() -> Backpressure:
    return Backpressure(max_buffered_records=10, max_buffered_bytes=1_000, max_uncommitted_records=100)


def test_each_bound_pauses_and_all_must_fall_below_half_to_resume() -> None:
    for full in (Load(10, 0, 0), Load(0, 1_000, 0), Load(0, 0, 100)):
        backpressure = gate()
        assert backpressure.update(full) is Change.PAUSE
        assert backpressure.paused
        assert backpressure.update(full) is None
        assert backpressure.update(Load(6, 0, 0)) is None
        assert backpressure.update(Load(5, 500, 51)) is None
        assert backpressure.update(Load(5, 500, 50)) is Change.RESUME
        assert not backpressure.paused


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 2_000), st.integers(0, 200)), max_size=50))
def test_the_state_follows_the_loads(loads: list[tuple[int, int, int]]) -> None:
    backpressure = gate()
    for records, size, uncommitted in loads:
        was_paused = backpressure.paused
        change = backpressure.update(Load(records, size, uncommitted))
        at_a_bound = records >= 10 or size >= 1_000 or uncommitted >= 100
        below_half = records <= 5 and size <= 500 and uncommitted <= 50
        if at_a_bound:
            assert backpressure.paused
        if below_half:
            assert not backpressure.paused
        if not at_a_bound and not below_half:
            assert backpressure.paused == was_paused
        assert (change is Change.PAUSE) == (not was_paused and backpressure.paused)
        assert (change is Change.RESUME) == (was_paused and not backpressure.paused)
