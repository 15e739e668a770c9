"""A TCP proxy in front of each broker, on an event loop of its own thread, that can be cut.

`cut()` drops every open connection (a reset, as a client sees a dead link) and, until
`heal()`, blackholes new ones: they are accepted and whatever the client sends is read and
dropped, nothing is answered, so clients wait out their own timeouts, as behind a network
partition. `cut(mode="refuse")` closes the listening socket instead (connection refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, Literal, TypeVar

T = TypeVar("T")

CHUNK_BYTES = 256 * 1024
CALL_TIMEOUT_S = 10.0


class ProxyLoop:
    """One asyncio loop in a daemon thread, shared by all the proxies of a session."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="chaos-proxy", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = CALL_TIMEOUT_S) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=CALL_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()


class TcpProxy:
    """Listens on 127.0.0.1:`port` (0: any free port) and forwards to `upstream_host:upstream_port`."""

    def __init__(self, loop: ProxyLoop, upstream_host: str, upstream_port: int, port: int = 0) -> None:
        self._loop = loop
        self.upstream = (upstream_host, upstream_port)
        self.port = port
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._mode: Literal["open", "blackhole", "refuse"] = "open"
        self.connections_accepted = 0
        self.bytes_forwarded = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._mode != "open"

    def start(self) -> TcpProxy:
        self._loop.call(self._listen())
        return self

    def cut(self, mode: Literal["blackhole", "refuse"] = "blackhole") -> None:
        self._loop.call(self._cut(mode))

    def heal(self) -> None:
        self._loop.call(self._heal())

    def close(self) -> None:
        self._loop.call(self._close())

    # --- on the proxy loop ---

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True, backlog=256
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self, mode: Literal["blackhole", "refuse"]) -> None:
        self._mode = mode
        if mode == "refuse" and self._server is not None:
            self._server.close()
            self._server = None
        self._drop_all()

    async def _heal(self) -> None:
        previous, self._mode = self._mode, "open"
        self._drop_all()  # blackholed connections: the clients reconnect, and now get through
        if previous == "refuse" or self._server is None:
            await self._listen()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._drop_all()

    def _drop_all(self) -> None:
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        self._links.add(writer)
        try:
            if self._mode != "open":
                await _drain_forever(reader)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                return  # the broker is down: the client sees its connection closed
            self._links.add(up_writer)
            try:
                await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
            finally:
                self._links.discard(up_writer)
                up_writer.transport.abort()
        finally:
            self._links.discard(writer)
            writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK_BYTES):
                if self._mode != "open":
                    return
                writer.write(data)
                self.bytes_forwarded += len(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # Either side closing ends the link: half-open Kafka connections are of no use.
            writer.transport.abort()


async def _drain_forever(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(CHUNK_BYTES):
            pass
