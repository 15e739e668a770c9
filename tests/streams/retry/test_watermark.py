"""Out-of-order completion: only the offset below which every job is done is committable."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.retry.watermark import PartitionWatermark


def test_commits_stop_at_the_first_unfinished_offset() -> None:
    mark = PartitionWatermark()
    for offset in (10, 11, 12, 13):
        mark.started(offset)
    assert mark.committable() == 10
    mark.finished(12)
    mark.finished(11)
    assert mark.committable() == 10
    mark.finished(10)
    assert mark.committable() == 13
    mark.finished(13)
    assert mark.committable() == 14
    assert mark.in_flight == 0


@given(st.lists(st.integers(0, 1_000), min_size=1, max_size=200, unique=True).map(sorted), st.randoms())
def test_committable_offset_is_never_past_an_unfinished_job(offsets: list[int], rnd: object) -> None:
    mark = PartitionWatermark()
    for offset in offsets:
        mark.started(offset)
    order = list(offsets)
    rnd.shuffle(order)  # type: ignore[attr-defined]
    finished: set[int] = set()
    for offset in order:
        mark.finished(offset)
        finished.add(offset)
        committable = mark.committable()
        assert committable is not None
        unfinished = [o for o in offsets if o not in finished]
        if unfinished:
            assert committable == min(unfinished)
        else:
            assert committable == offsets[-1] + 1
