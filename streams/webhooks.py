"""`POST /webhooks/resend`: Resend's delivery events, verified, published on `email-events`.

A plain ASGI app; the worker mounts it with `AsgiFastStream(asgi_routes=[(path, app)])`.
Resend signs each event with Svix (`svix-id`, `svix-timestamp`, `svix-signature`
headers, HMAC-SHA256 with the endpoint's `whsec_...` secret); the `svix` package checks
it. Answers:

- 200 `{"status": "published"}`: verified and published (key: Resend's email id);
- 200 `{"status": "duplicate"}`: an event id this process published within the
  tolerance window (a replay, or Resend retrying after a lost answer); not published again;
- 400: a timestamp outside the tolerance, or a verified body that is not a Resend event;
- 401: a signature missing or wrong; 405: not a POST; 413: a body over `max_body_bytes`;
- 503: no secret configured (`RESEND_WEBHOOK_SECRET` unset), or the publish failed, so
  that Resend tries again later.

The replay memory only spares the topic obvious repeats: after a restart, or for a
retry later than the window, an event is published again, and consumers deduplicate by
`event_id` (`DeliveryEvents.record`).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from processors.email.events import EventKind, parse_webhook
from processors.email.service import mask_email
from processors.errors import PoisonMessage

log = logging.getLogger(__name__)

PATH = "/webhooks/resend"
SVIX_TOLERANCE_S = 300
"""The `svix` package's own window, checked against the system clock; ours may only be narrower."""
MAX_BODY_BYTES = 256 * 1024
MAX_REMEMBERED_IDS = 100_000

Publish = Callable[[bytes, bytes | None], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Rejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class SeenIds:
    """The event ids published within the last `window_s`, at most `max_ids` of them."""

    def __init__(self, window_s: float, max_ids: int = MAX_REMEMBERED_IDS) -> None:
        self._window_s = window_s
        self._max_ids = max_ids
        self._seen_s: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._seen_s

    def __len__(self) -> int:
        return len(self._seen_s)

    def forget_before(self, now_s: float) -> None:
        while self._seen_s:
            oldest_id, seen_s = next(iter(self._seen_s.items()))
            if seen_s >= now_s - self._window_s and len(self._seen_s) <= self._max_ids:
                return
            del self._seen_s[oldest_id]

    def add(self, event_id: str, now_s: float) -> None:
        self._seen_s[event_id] = now_s
        self._seen_s.move_to_end(event_id)
        self.forget_before(now_s)


def resend_webhook(
    secret: str | None,
    publish: Publish,
    *,
    clock_s: Callable[[], float] = time.time,
    tolerance_s: float = SVIX_TOLERANCE_S,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_remembered_ids: int = MAX_REMEMBERED_IDS,
) -> AsgiApp:
    """The ASGI app of `POST /webhooks/resend`. `secret` is the endpoint's signing secret
    (`whsec_...`); None answers every request 503. `publish(value, key)` publishes one
    `email-events` message. Raises ValueError if the secret is not a signing secret."""
    if not 0 < tolerance_s <= SVIX_TOLERANCE_S:
        raise ValueError(f"tolerance_s must be in (0, {SVIX_TOLERANCE_S}], not {tolerance_s}")
    verify = None if secret is None else _verifier(secret)
    if verify is None:
        log.warning("RESEND_WEBHOOK_SECRET is not set: %s answers 503 to Resend's events", PATH)
    seen = SeenIds(tolerance_s, max_remembered_ids)
    in_flight: set[str] = set()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            if request.method != "POST":
                response = JSONResponse({"error": "use POST"}, status_code=405, headers={"Allow": "POST"})
            elif verify is None:
                raise _Rejected(503, "RESEND_WEBHOOK_SECRET is unset: this worker takes no Resend events")
            else:
                response = await handle(request, verify)
        except _Rejected as rejected:
            if rejected.status != 503:
                log.warning("rejected a Resend webhook: %s %s", rejected.status, rejected.reason)
            response = JSONResponse({"error": rejected.reason}, status_code=rejected.status)
        await response(scope, receive, send)

    async def handle(request: Request, verify: Callable[[bytes, dict[str, str]], None]) -> JSONResponse:
        body = await _read_body(request, max_body_bytes)
        headers = {
            name: request.headers.get(name, "") for name in ("svix-id", "svix-timestamp", "svix-signature")
        }
        if not all(headers.values()):
            raise _Rejected(401, "missing svix-id, svix-timestamp or svix-signature header")
        now_s = clock_s()
        _check_timestamp(headers["svix-timestamp"], now_s, tolerance_s)
        verify(body, headers)
        event_id = headers["svix-id"]
        seen.forget_before(now_s)
        if event_id in seen or event_id in in_flight:
            log.info("resend event %s again: a duplicate, not published", event_id)
            return JSONResponse({"status": "duplicate", "event_id": event_id})
        try:
            event = parse_webhook(body, event_id=event_id, received_at=datetime.fromtimestamp(now_s, UTC))
        except PoisonMessage as error:
            raise _Rejected(400, error.message) from None
        in_flight.add(event_id)
        try:
            await publish(event.to_message(), event.email_id.encode() if event.email_id else None)
        except Exception as error:
            log.warning(
                "could not publish resend event %s (%s); answered 503", event_id, type(error).__name__
            )
            raise _Rejected(503, "could not publish the event; try again later") from None
        else:
            seen.add(event_id, now_s)
        finally:
            in_flight.discard(event_id)
        log.info(
            "resend event %s: %s for %s, email %s",
            event_id,
            event.kind.value if event.kind is not EventKind.OTHER else f"other ({event.resend_type[:60]})",
            ", ".join(mask_email(address) for address in event.recipients) or "no recipient",
            event.email_id,
        )
        return JSONResponse({"status": "published", "event_id": event_id})

    return app


def _verifier(secret: str) -> Callable[[bytes, dict[str, str]], None]:
    # Imported here: the svix package (its API client included) costs ~0.4 s to import.
    from svix.webhooks import Webhook, WebhookVerificationError

    try:
        webhook = Webhook(secret)
    except Exception:
        # Never the secret itself in the message.
        raise ValueError("RESEND_WEBHOOK_SECRET is not a signing secret (whsec_...)") from None

    def verify(body: bytes, headers: dict[str, str]) -> None:
        try:
            webhook.verify(body, headers)
        except WebhookVerificationError as error:
            if "timestamp" in str(error).lower():
                raise _Rejected(400, "svix-timestamp is outside the tolerance") from None
            raise _Rejected(401, "invalid signature") from None
        except ValueError:  # a malformed signature header, or a body that is not UTF-8
            raise _Rejected(401, "invalid signature") from None

    return verify


async def _read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _Rejected(413, f"the body is over {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise _Rejected(413, f"the body is over {max_bytes} bytes")
    return bytes(body)


def _check_timestamp(value: str, now_s: float, tolerance_s: float) -> None:
    try:
        sent_s = int(value)
    except ValueError:
        raise _Rejected(400, "svix-timestamp is not a Unix time in seconds") from None
    if abs(now_s - sent_s) > tolerance_s:
        raise _Rejected(400, "svix-timestamp is outside the tolerance")
