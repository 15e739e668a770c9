"""A local HTTP server that speaks Resend's `POST /emails` wire format.

It keeps Resend's idempotency semantics: a repeated `Idempotency-Key` with the same
payload returns the first response and delivers nothing new; with another payload it
answers 409 `invalid_idempotent_request`. Failures can be scripted per job id.

For benchmarks it also keeps each request's arrival time (before its latency), and can
make requests hang — scripted per idempotency key, or at random with a probability —
for a set time, after which they are answered as usual (a client that timed out has
gone by then; its retry meets the idempotency replay).
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from tests.fakes.http import FakeHandler

ERROR_NAMES = {
    400: "validation_error",
    401: "missing_api_key",
    403: "invalid_api_key",
    409: "invalid_idempotent_request",
    422: "validation_error",
    429: "rate_limit_exceeded",
    500: "application_error",
    503: "application_error",
}


@dataclass(frozen=True)
class Reply:
    status: int
    retry_after_s: float | None = None
    error_name: str | None = None


@dataclass
class Request:
    at_s: float
    idempotency_key: str | None
    authorization: str | None
    body: dict[str, Any]
    status: int
    arrived_s: float = 0.0  # when the request arrived, before latency and hang
    hung_s: float = 0.0  # how long it was held by a hang

    @property
    def to(self) -> list[str]:
        return list(self.body.get("to") or [])


@dataclass
class Delivery:
    email_id: str
    idempotency_key: str | None
    body: dict[str, Any]
    at_s: float
    arrived_s: float = 0.0  # arrival of the request that delivered it


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[Request] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    by_key: dict[str, tuple[str, Delivery]] = field(default_factory=dict)
    scripts: dict[str, deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    down: Reply | None = None
    latency_s: float = 0.0
    hangs: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    hang_probability: float = 0.0
    hang_s: float = 0.0
    rng: random.Random = field(default_factory=random.Random)


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 resets connections when a client opens dozens at once.
    request_queue_size = 128


class FakeResend:
    def __init__(self) -> None:
        self.state = _State()
        state = self.state

        class Handler(FakeHandler):
            def do_POST(self) -> None:
                arrived_s = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/emails":
                    self._reply(404, {"statusCode": 404, "name": "not_found", "message": "Not found"})
                    return
                body = json.loads(raw or b"{}")
                key = self.headers.get("Idempotency-Key")
                hung_s = self._hang_for(key)
                if hung_s:
                    time.sleep(hung_s)
                if state.latency_s:
                    time.sleep(state.latency_s)
                with state.lock:
                    status, payload, headers = self._decide(key, body, arrived_s)
                    state.requests.append(
                        Request(
                            time.time(),
                            key,
                            self.headers.get("Authorization"),
                            body,
                            status,
                            arrived_s=arrived_s,
                            hung_s=hung_s,
                        )
                    )
                self._reply(status, payload, headers)

            def _hang_for(self, key: str | None) -> float:
                with state.lock:
                    if key is not None and state.hangs.get(key):
                        return state.hangs[key].popleft()
                    if state.hang_probability and state.rng.random() < state.hang_probability:
                        return state.hang_s
                return 0.0

            def _decide(
                self, key: str | None, body: dict[str, Any], arrived_s: float
            ) -> tuple[int, dict[str, Any], dict[str, str]]:
                reply = state.down
                if reply is None and key is not None and state.scripts.get(key):
                    reply = state.scripts[key].popleft()
                if reply is not None:
                    headers = {}
                    if reply.retry_after_s is not None:
                        headers["retry-after"] = str(reply.retry_after_s)
                    name = reply.error_name or ERROR_NAMES.get(reply.status, "application_error")
                    return (
                        reply.status,
                        {"statusCode": reply.status, "name": name, "message": f"scripted {reply.status}"},
                        headers,
                    )
                if not body.get("to") or not body.get("from") or not body.get("subject"):
                    return (
                        422,
                        {"statusCode": 422, "name": "validation_error", "message": "Missing fields"},
                        {},
                    )
                fingerprint = json.dumps(body, sort_keys=True)
                if key is not None and key in state.by_key:
                    seen_fingerprint, delivery = state.by_key[key]
                    if seen_fingerprint != fingerprint:
                        return (
                            409,
                            {
                                "statusCode": 409,
                                "name": "invalid_idempotent_request",
                                "message": "Same key, other payload",
                            },
                            {},
                        )
                    return 200, {"id": delivery.email_id}, {}
                delivery = Delivery(str(uuid.uuid4()), key, body, time.time(), arrived_s=arrived_s)
                state.deliveries.append(delivery)
                if key is not None:
                    state.by_key[key] = (fingerprint, delivery)
                return 200, {"id": delivery.email_id}, {}

            def _reply(
                self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                # The client may have given up (a timeout test).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeResend:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, idempotency_key: str, *replies: Reply) -> None:
        """The next requests with this key get these replies, in order; then success."""
        with self.state.lock:
            self.state.scripts[idempotency_key].extend(replies)

    def hang(self, idempotency_key: str, *seconds: float) -> None:
        """The next requests with this key are each held this long, then answered as usual."""
        with self.state.lock:
            self.state.hangs[idempotency_key].extend(seconds)

    def set_hang_probability(self, probability: float, seconds: float, *, seed: int | None = None) -> None:
        """Hold each request (any key) for `seconds` with this probability; 0 turns it off."""
        with self.state.lock:
            self.state.hang_probability = probability
            self.state.hang_s = seconds
            self.state.rng = random.Random(seed)

    def set_down(self, reply: Reply | None) -> None:
        """Answer every request with `reply` until called with None."""
        with self.state.lock:
            self.state.down = reply

    @property
    def requests(self) -> list[Request]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def deliveries(self) -> list[Delivery]:
        with self.state.lock:
            return list(self.state.deliveries)

    @property
    def delivery_count(self) -> int:
        with self.state.lock:
            return len(self.state.deliveries)

    def deliveries_by_key(self) -> dict[str | None, list[Delivery]]:
        out: dict[str | None, list[Delivery]] = defaultdict(list)
        for delivery in self.deliveries:
            out[delivery.idempotency_key].append(delivery)
        return out
