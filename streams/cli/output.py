"""Where the CLI writes: results on stdout, progress and errors on stderr, one line each."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

# Piped output is not cut to 80 columns: scripts and `grep` read whole lines.
PIPED_WIDTH = 160


def stdout() -> Console:
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(highlight=False, soft_wrap=True, width=PIPED_WIDTH)
    return console


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def line(text: str = "") -> None:
    """One plain line on stdout, as it is: no markup, no wrapping."""
    sys.stdout.write(text + "\n")


def emit_json(data: Any) -> None:
    """A document for scripts: JSON on stdout, datetimes as ISO 8601."""
    sys.stdout.write(json.dumps(data, indent=2, default=_default, ensure_ascii=False, sort_keys=True) + "\n")


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, then exit with `code` (1: not found or unreachable; 2: invalid input)."""
    sys.stderr.write(message + "\n")
    raise typer.Exit(code)


def _default(value: Any) -> Any:
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return isoformat()
    return str(value)
