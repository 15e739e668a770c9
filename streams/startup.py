"""Ending a start-up that can't succeed with one clear line, not a traceback.

FastStream runs the start-up hooks in a task group, and prints any error there, a
`SystemExit` included, as an exception-group traceback. A configuration mistake (a wrong
password, an unreachable store) is not a bug: the operator gets one line naming what to
check, and the process exits with status 2 before anything has been consumed.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

log = logging.getLogger("worker")

EXIT_STATUS = 2


def fail_start(message: str) -> NoReturn:
    """Print `message` (never a secret) to stderr and end the process at once."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.write(f"worker: {message}\n")
    sys.stderr.flush()
    os._exit(EXIT_STATUS)
