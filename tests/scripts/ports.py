"""Loopback ports for tests that need nothing to listen, or something that is not a server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


def closed_port() -> int:
    """A port that nothing listens on (the OS just handed it out and it was released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A port that accepts connections and never says a word: open, but no server behind it."""
    connections: list[asyncio.StreamWriter] = []

    async def keep(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(keep, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in connections:
            writer.close()
        await server.wait_closed()


@asynccontextmanager
async def hanging_up_server() -> AsyncIterator[int]:
    """A port that accepts connections and closes them at once: open, but no server behind it."""

    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
