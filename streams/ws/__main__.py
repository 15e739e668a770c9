"""Run the notifier: `python -m streams.ws [--host 127.0.0.1] [--port 8001]`.

Needs `WS_TOKEN_SECRET`; reads `KAFKA_BOOTSTRAP_SERVERS` and the other settings too.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import uvicorn

from streams.settings import get_settings
from streams.ws.app import app_from_settings

# Browsers send nothing but control frames; a large message is not a client of ours.
MAX_CLIENT_MESSAGE_BYTES = 16 * 1024


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m streams.ws", description="Push each user's ad results to their browser."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)

    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = app_from_settings()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
        ws_max_size=MAX_CLIENT_MESSAGE_BYTES,
    )


if __name__ == "__main__":
    main()
