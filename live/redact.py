"""Keep tokens out of the logs: uvicorn logs request paths with their query strings."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

_TOKEN_PARAM = re.compile(r"(?i)(\btoken=)[^&\s\"']+")
REDACTED = "[redacted]"
UVICORN_LOGGERS = ("uvicorn.access", "uvicorn.error")


def redact(text: str) -> str:
    return _TOKEN_PARAM.sub(r"\g<1>" + REDACTED, text)


class RedactTokens(logging.Filter):
    """Rewrites `token=...` in a record's message and arguments.

    The arguments stay a tuple of the same shape: uvicorn's access formatter unpacks them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def install_log_redaction(logger_names: Iterable[str] = UVICORN_LOGGERS) -> None:
    """Add `RedactTokens` to these loggers, once. Logger filters survive uvicorn's
    `dictConfig`, so this works before or after uvicorn configures logging."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
