"""What the processors tell an observer (metrics) about their calls to providers.

A processor never imports a metrics library: it is given an observer, or none.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from processors.errors import PermanentError, TransientError


class CallObserver(Protocol):
    def call_finished(self, operation: str, duration_s: float, outcome: str) -> None:
        """One call to the provider ended: `outcome` is `ok`, `transient`, `permanent` or `error`."""
        ...


class TokenObserver(Protocol):
    def tokens_used(self, model: str, input_tokens: int, output_tokens: int) -> None: ...


@contextmanager
def timed_call(
    observer: CallObserver | None, operation: str, clock_s: Callable[[], float] = time.perf_counter
) -> Iterator[None]:
    """Time the block and tell `observer` how it ended (a classified error by its kind)."""
    if observer is None:
        yield
        return
    started_s = clock_s()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    except TransientError:
        outcome = "transient"
        raise
    except PermanentError:
        outcome = "permanent"
        raise
    finally:
        observer.call_finished(operation, clock_s() - started_s, outcome)


class ModelObserver(CallObserver, TokenObserver, Protocol):
    """Told of each model call, and of the tokens each answer used."""
