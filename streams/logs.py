"""How the worker logs: configured once at start from `WorkerSettings`."""

from __future__ import annotations

import logging
from typing import Any

from streams.settings import WorkerSettings


def configure_logging(worker: WorkerSettings) -> None:
    logging.basicConfig(level=worker.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def log_context_middlewares() -> list[Any]:
    """Broker middlewares that put the job's fields (job_id, topic, ...) on its log records
    (none yet)."""
    return []
