"""Comparing stored documents from tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from processors.store import aware


def utc(value: Any) -> Any:
    """`value` with every datetime UTC-aware, nested ones too: a naive client's are not."""
    if isinstance(value, datetime):
        return aware(value)
    if isinstance(value, dict):
        return {key: utc(item) for key, item in value.items()}
    if isinstance(value, list):
        return [utc(item) for item in value]
    return value
