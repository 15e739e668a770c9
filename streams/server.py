"""The worker as an ASGI app: FastStream's `AsgiFastStream`, served by uvicorn on
`HTTP_HOST:HTTP_PORT` when run with `faststream run streams.app:app`.

The HTTP server carries the Resend webhook (`streams.webhooks`). `faststream run ...
--host H --port P` still wins over the settings. uvicorn handles SIGTERM: it stops taking
requests, then the lifespan shutdown stops the subscribers with their grace period.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from faststream.asgi import AsgiFastStream


class WorkerApp(AsgiFastStream):
    def __init__(self, *args: Any, http_host: str, http_port: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http_host = http_host
        self.http_port = http_port

    async def run(
        self,
        log_level: int = logging.INFO,
        run_extra_options: dict[str, Any] | None = None,
    ) -> None:
        options: dict[str, Any] = {
            "host": self.http_host,
            "port": self.http_port,
            # One line per webhook call would drown the job logs.
            "access_log": "false",  # a string, as from the command line
            **{k: v for k, v in (run_extra_options or {}).items() if v is not None},
        }
        if threading.current_thread() is threading.main_thread():
            # uvicorn turns SIGTERM and SIGINT into a graceful shutdown, then raises the
            # signal again for the handler it found: let that be a no-op, so a drained
            # worker exits with status 0 rather than being killed by its own signal.
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, _ignore)
        await super().run(log_level, options)


def _ignore(signum: int, frame: object) -> None:
    return None
