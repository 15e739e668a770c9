"""The worker as an ASGI app: FastStream's `AsgiFastStream`, served by uvicorn on
`HTTP_HOST:HTTP_PORT` when run with `faststream run streams.app:app`.

The HTTP server carries the Resend webhook (`streams.webhooks`), `/healthz`, `/readyz` and
`/metrics`. `faststream run ... --host H --port P` still wins over the settings.
`HTTP_PORT=0` turns the server off: the app then runs as a plain FastStream app, so
several workers can share a host. Either way SIGTERM and SIGINT stop taking records, the
shutdown hooks stop the subscribers with their grace period, and the process exits 0.
"""

from __future__ import annotations

import asyncio
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
        self._stopping: asyncio.Event | None = None

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
            # Keep the worker's logging (`streams.logs`), JSON included; uvicorn's own
            # configuration would replace its handlers.
            "log_config": None,
        }
        if int(options["port"]) == 0:
            await self._run_without_http(log_level)
            return
        if threading.current_thread() is threading.main_thread():
            # uvicorn turns SIGTERM and SIGINT into a graceful shutdown, then raises the
            # signal again for the handler it found: let that be a no-op, so a drained
            # worker exits with status 0 rather than being killed by its own signal.
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, _ignore)
        await super().run(log_level, options)

    def exit(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        else:
            super().exit()

    async def _run_without_http(self, log_level: int) -> None:
        """The start-up and shutdown hooks as uvicorn's lifespan runs them, with no server."""
        self._stopping = stopping = asyncio.Event()
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stopping.set)
        self._log(log_level, "HTTP_PORT=0: no HTTP server (no webhook, health or metrics routes)")
        async with self.start_lifespan_context():
            await stopping.wait()


def _ignore(signum: int, frame: object) -> None:
    return None
