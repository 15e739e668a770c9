"""The live notifier: pushes each user's `ad-results` to their open browser pages over a WebSocket.

    python -m live                                # or: uvicorn --factory live.app:app_from_env

GET /?token=...    a page that shows the results as they arrive
WS  /ws?token=...  the results of the token's user, one JSON object per text message;
                   closed with 4401 when the token is invalid or expires
GET /healthz       200 while the Kafka consumer runs, else 503
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from importlib.resources import files
from typing import Any

from aiokafka.errors import KafkaError
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from live.feed import DEFAULT_READY_TIMEOUT_S, FeedError, ResultFeed
from live.hub import DEFAULT_QUEUE_SIZE, Hub, Subscription
from live.redact import install_log_redaction
from live.settings import LiveSettings, kafka_client_options, load_settings
from live.tokens import InvalidToken, read_token
from streams.admin import ensure_topics

log = logging.getLogger(__name__)

# Package data, so it is found in a checkout and in an installed wheel alike.
PAGE_RESOURCE = "static/index.html"
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_SLOW = 1013  # "try again later"
CLOSE_TIMEOUT_S = 5.0
# A token may expire up to this much later than WS_TOKEN_TTL_S allows: the issuer's clock may be ahead.
CLOCK_SKEW_S = 60


def create_app(
    *,
    bootstrap_servers: str,
    secret: SecretStr,
    token_ttl_s: int,
    topic: str,
    topic_partitions: int | None = None,
    replication_factor: int = 1,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    client_options: Mapping[str, Any] | None = None,
) -> Starlette:
    """The notifier for results on `topic`, with tokens signed by `secret`.

    Tokens that expire more than `token_ttl_s` (plus clock skew) from now are refused.
    With `topic_partitions`, a missing topic is created with that many partitions first
    (otherwise a broker that auto-creates topics would make a one-partition topic).
    Start-up returns once the consumer has a position on every partition.
    `client_options` are the Kafka clients' security keywords (`streams.security.client_kwargs`).
    """
    if not secret.get_secret_value():
        raise ValueError("the token secret is empty")
    install_log_redaction()
    hub = Hub(queue_size=queue_size)
    feed = ResultFeed(
        hub,
        bootstrap_servers=bootstrap_servers,
        topic=topic,
        ready_timeout_s=ready_timeout_s,
        client_options=client_options,
    )
    page, page_headers = _page_with_headers(files("live").joinpath(PAGE_RESOURCE).read_text(encoding="utf-8"))
    max_ttl_s = token_ttl_s + CLOCK_SKEW_S

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers=page_headers)

    async def healthz(request: Request) -> Response:
        body = {
            "status": "ok" if feed.running else "failing",
            "topic": topic,
            "connections": hub.connection_count,
            "dropped_connections": hub.dropped_connections,
            "records_received": feed.records_received,
            "records_skipped": feed.records_skipped,
        }
        return JSONResponse(body, status_code=200 if feed.running else 503)

    async def results_socket(websocket: WebSocket) -> None:
        try:
            token = websocket.query_params.get("token", "")
            claims = read_token(token, secret, time.time(), max_ttl_s=max_ttl_s)
        except InvalidToken as error:
            # Accept first: a close before the handshake reaches a browser as a bare
            # HTTP 403, without the code and reason the page shows.
            await websocket.accept()
            await _close(websocket, CLOSE_UNAUTHORIZED, str(error))
            return
        # Subscribe before accepting, so a page that saw `open` misses nothing.
        subscription = hub.subscribe(claims.user_id)
        try:
            await websocket.accept()
            await _serve(websocket, subscription, expires_in_s=claims.expires_s - time.time())
        finally:
            hub.unsubscribe(subscription)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if topic_partitions is not None:
            try:
                await ensure_topics(
                    bootstrap_servers,
                    [topic],
                    partitions=topic_partitions,
                    replication_factor=replication_factor,
                    client_options=client_options,
                )
            except KafkaError as error:
                raise FeedError(f"cannot reach Kafka at {bootstrap_servers}: {error!r}") from None
        await feed.start()
        try:
            yield
        finally:
            await feed.stop()

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            WebSocketRoute("/ws", results_socket),
        ],
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.state.feed = feed
    return app


async def _serve(websocket: WebSocket, subscription: Subscription, *, expires_in_s: float) -> None:
    sender = asyncio.create_task(_send_all(websocket, subscription))
    # Reading is how a closed connection is noticed; what the client sends is ignored.
    receiver = asyncio.create_task(_read_until_closed(websocket))
    # Watched apart from the sender: a client that stopped reading leaves it stuck in a send.
    dropped = asyncio.create_task(subscription.until_dropped())
    tasks = (sender, receiver, dropped)
    try:
        done, _ = await asyncio.wait(
            tasks, timeout=max(expires_in_s, 0.0), return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if not done:
        await _close(websocket, CLOSE_UNAUTHORIZED, "token expired")
    elif dropped in done:
        await _close(websocket, CLOSE_TOO_SLOW, "too slow: results were not read in time")


async def _send_all(websocket: WebSocket, subscription: Subscription) -> None:
    while True:
        text = await subscription.next()
        try:
            await websocket.send_text(text)
        except (WebSocketDisconnect, WebSocketDisconnected):
            return


async def _read_until_closed(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    # A client that does not read cannot take a close frame either: give up after a
    # while and let the server drop the connection.
    with suppress(WebSocketDisconnect, WebSocketDisconnected, TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await websocket.close(code=code, reason=reason)


_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def _page_with_headers(html: str) -> tuple[str, dict[str, str]]:
    """The page and its headers. The CSP allows exactly the page's own inline script and
    style (by hash), and connections to this origin only."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for kind, body in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        hashes[kind].append(f"'sha256-{digest}'")
    sources = {kind: " ".join(found) or "'none'" for kind, found in hashes.items()}
    csp = "; ".join(
        (
            "default-src 'none'",
            f"script-src {sources['script']}",
            f"style-src {sources['style']}",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    headers = {
        "Content-Security-Policy": csp,
        "Cache-Control": "no-store",
        # The token is in the page's URL: never send it onwards.
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    return html, headers


def app_from_settings(settings: LiveSettings) -> Starlette:
    """The notifier as `settings` configure it: `ad-results` behind the topic prefix,
    created first when `KAFKA_CREATE_TOPICS` allows."""
    return create_app(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        secret=settings.ws_token_secret,
        token_ttl_s=settings.ws_token_ttl_s,
        topic=settings.results_topic,
        topic_partitions=settings.kafka_topic_partitions if settings.kafka_create_topics else None,
        replication_factor=settings.kafka_replication_factor,
        client_options=kafka_client_options(),
    )


def app_from_env() -> Starlette:
    """The notifier configured from the environment, for `uvicorn --factory live.app:app_from_env`."""
    return app_from_settings(load_settings())
