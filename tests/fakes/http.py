"""The base of the fake HTTP servers: keep-alive, no request logging, no Nagle delay."""

from __future__ import annotations

import socket
from http.server import BaseHTTPRequestHandler
from typing import Any


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm
        # and delayed ACKs add ~40 ms to every request.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        return None
