"""When to pause fetching and when to resume: at a bound, and again below half of it.

The gap between the two keeps a subscriber near its bound from pausing and resuming on
every record (a pause discards the consumer's prefetched records, which a resume fetches
again).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Change(enum.Enum):
    PAUSE = "pause"
    RESUME = "resume"


@dataclass(frozen=True, slots=True)
class Load:
    buffered_records: int
    buffered_bytes: int
    uncommitted_records: int


class Backpressure:
    def __init__(self, *, max_buffered_records: int, max_buffered_bytes: int, max_uncommitted_records: int):
        self._limits = Load(max_buffered_records, max_buffered_bytes, max_uncommitted_records)
        self.paused = False

    def update(self, load: Load) -> Change | None:
        """What to do about `load`, now; the answer is remembered in `paused`."""
        limits = self._limits
        if not self.paused and (
            load.buffered_records >= limits.buffered_records
            or load.buffered_bytes >= limits.buffered_bytes
            or load.uncommitted_records >= limits.uncommitted_records
        ):
            self.paused = True
            return Change.PAUSE
        if self.paused and (
            load.buffered_records <= limits.buffered_records // 2
            and load.buffered_bytes <= limits.buffered_bytes // 2
            and load.uncommitted_records <= limits.uncommitted_records // 2
        ):
            self.paused = False
            return Change.RESUME
        return None
