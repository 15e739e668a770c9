"""`--since 30m`: a span of time back from now."""

from __future__ import annotations

import re
from datetime import timedelta

_SPAN = re.compile(r"(\d{1,6})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str) -> timedelta:
    """`90s`, `30m`, `1h`, `2d` as a timedelta; ValueError for anything else."""
    match = _SPAN.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a span like 30m, 1h or 2d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
