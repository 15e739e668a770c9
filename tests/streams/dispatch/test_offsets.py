"""Watermark commits: never past an offset read and not finished; only when it moved."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.dispatch.offsets import OffsetTracker, PartitionOffsets


def test_the_watermark_waits_for_the_lowest_unfinished_offset() -> None:
    offsets = PartitionOffsets()
    assert offsets.committable() is None
    for offset in (10, 11, 12, 14):  # 13 is a gap (compaction, a transaction marker)
        assert offsets.read(offset)
    offsets.finish(12)
    offsets.finish(11)
    assert (offsets.committable(), offsets.open, offsets.unfinished) == (10, 4, 2)
    offsets.finish(10)
    assert (offsets.committable(), offsets.open) == (14, 1)
    offsets.finish(14)
    assert (offsets.committable(), offsets.open) == (15, 0)


def test_an_offset_read_again_is_refused() -> None:
    offsets = PartitionOffsets()
    assert offsets.read(5)
    assert not offsets.read(5)
    assert not offsets.read(3)
    assert offsets.open == 1


def test_finishing_an_offset_never_read_is_an_error() -> None:
    offsets = PartitionOffsets()
    offsets.read(1)
    with pytest.raises(ValueError, match="never read"):
        offsets.finish(2)


def test_the_plan_holds_only_partitions_whose_watermark_moved() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.partition("p0").read(0)
    tracker.partition("p1").read(7)
    tracker.partition("p1").finish(7)

    assert tracker.commit_plan() == {"p0": 0, "p1": 8}
    tracker.committed({"p0": 0, "p1": 8})
    assert tracker.commit_plan() == {}
    tracker.partition("p0").finish(0)
    assert tracker.commit_plan() == {"p0": 1}
    assert tracker.commit_plan(only={"p1"}) == {}
    assert tracker.open == 0

    tracker.forget(["p0"])
    assert tracker.commit_plan() == {}
    assert tracker.partition("p0").committable() is None, "a new assignment starts afresh"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=1, max_size=120), st.data())
def test_the_watermark_is_never_past_an_unfinished_offset(gaps: list[int], data: st.DataObject) -> None:
    offsets = PartitionOffsets()
    to_read = []
    position = data.draw(st.integers(0, 1_000), label="start")
    for gap in gaps:
        to_read.append(position)
        position += gap
    read: list[int] = []
    finished: set[int] = set()

    while len(finished) < len(to_read):
        unfinished_read = [o for o in read if o not in finished]
        if to_read[len(read) :] and (not unfinished_read or data.draw(st.booleans(), label="read?")):
            offset = to_read[len(read)]
            assert offsets.read(offset)
            read.append(offset)
        else:
            offset = data.draw(st.sampled_from(unfinished_read), label="finish")
            offsets.finish(offset)
            finished.add(offset)

        committable = offsets.committable()
        unfinished = [o for o in read if o not in finished]
        assert committable == (min(unfinished) if unfinished else read[-1] + 1)
        assert offsets.open == sum(1 for o in read if o >= committable)
        assert offsets.unfinished == len(unfinished)
