"""Secrets never reach the terminal: OTP codes and link tokens are shown as `<redacted>`."""

from __future__ import annotations

import json
from typing import Any

REDACTED = "<redacted>"
REDACTED_FIELDS = frozenset({"code", "verification_url"})


def redact(data: Any) -> Any:
    """`data` with every `code` and `verification_url` field replaced, at any depth."""
    if isinstance(data, dict):
        return {k: (REDACTED if k in REDACTED_FIELDS else redact(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [redact(item) for item in data]
    return data


def record_value(value: bytes, *, raw: bool) -> Any:
    """A record's value for display: its JSON, redacted unless `raw`; a note if it is not JSON."""
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):  # not UTF-8 or JSON, too deep, a number too long
        return value.decode("utf-8", "replace") if raw else f"<{len(value)} bytes, not JSON>"
    return data if raw else redact(data)
