"""OpenTelemetry traces across every hop of a job (issue 12): not built yet."""

from __future__ import annotations

from typing import Any

from streams.settings import Settings


def tracing_middlewares(settings: Settings) -> list[Any]:
    """The broker middlewares that trace every message (none yet)."""
    return []
