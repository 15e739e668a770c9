"""Run the live notifier: `python -m live [--host 127.0.0.1] [--port 8001]`.

Needs `WS_TOKEN_SECRET`; reads `KAFKA_BOOTSTRAP_SERVERS`, `KAFKA_TOPIC_PREFIX` and the
other variables of `live.settings.LiveSettings`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import uvicorn

from live.app import app_from_settings
from live.settings import load_settings
from streams.logformat import setup_logging

# Browsers send nothing but control frames; a large message is not a client of ours.
MAX_CLIENT_MESSAGE_BYTES = 16 * 1024


def main(argv: Sequence[str] | None = None) -> None:
    """The entry point of `python -m live` and of a console script."""
    program = os.path.basename(sys.argv[0])
    parser = argparse.ArgumentParser(
        prog="python -m live" if program == "__main__.py" else program,
        description="Push each user's ad results to their browser over a WebSocket.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)

    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        app_from_settings(settings),
        host=args.host,
        port=args.port,
        # None: uvicorn's loggers keep no handlers of their own, so theirs take our format.
        log_config=None,
        log_level=settings.log_level.lower(),
        ws_max_size=MAX_CLIENT_MESSAGE_BYTES,
    )


if __name__ == "__main__":
    main()
