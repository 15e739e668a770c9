"""A local HTTP server that speaks Resend's `POST /emails` and `POST /emails/batch` wire formats.

It keeps Resend's idempotency semantics, on both endpoints and in one key space: a
repeated `Idempotency-Key` with the same payload (for a batch: the same list and the
same `x-batch-validation` mode) replays the first answer exactly and delivers nothing
new; with another payload it answers 409 `invalid_idempotent_request`. An answer that
delivered nothing (a 422 for the whole request, a rate-limit 429, a scripted failure)
stores nothing for its key. While a request with a key is still being handled (held by
a hang, or accepted and not yet answered), another request with that key is answered
409 `concurrent_idempotent_requests` and delivers nothing. A key is kept
`idempotency_ttl_s` (24 h, as Resend); a key of more than 256 characters, or an empty
one, is answered 400 `invalid_idempotency_key`. Failures can be scripted per
idempotency key.

For chaos tests, `set_faults(FaultMix(...), seed)` answers a share of requests 5xx, 429
with `retry-after`, or late (the email accepted and recorded at arrival, the answer held
`late_s`, past the client's timeout). Each request's fate is drawn from its key, how many
requests with that key came before it, and the seed: independent of arrival order and
timing, so a failing run replays.

Batches hold 1..100 emails. In `strict` mode (the default) one invalid entry fails the
whole batch with a 422 naming its index; in `permissive` mode the valid entries are
delivered and the invalid ones are listed in `errors`. An entry is invalid when `from`,
`to` or `subject` is missing, when a `to` address is not `x@y.z` or `Name <x@y.z>`, or
when the address was refused with `reject_address` (the provider refusing an address
our own validation accepts).

A rate limit can be set per rolling second, counted once per HTTP request and decided
at arrival: a request that arrives when `per_s` requests were already let through in
the last second is answered 429 `rate_limit_exceeded` with `retry-after` and the
`ratelimit-*` headers, as Resend does.

For benchmarks it also keeps each request's arrival time (before its latency), and can
make requests hang — scripted per idempotency key, or at random with a probability
(optionally for batch calls only) — for a set time, after which they are decided and
answered as usual (a client that timed out has gone by then; its retry meanwhile gets the
409 `concurrent_idempotent_requests`, and after it the idempotency replay).

Webhooks: after `configure_webhooks(url, secret)`, every email accepted is followed by
Svix-signed events in Resend's shape, POSTed from a background thread (never holding up
the send's answer), in order: `email.sent` then `email.delivered`; for an address set
with `bounce_address` `email.sent` then `email.bounced`; for `complain_address`
`email.sent`, `email.delivered`, `email.complained`. Each POST is recorded in
`webhooks_sent` with the status answered. `send_event`, `send_forged_event` and
`replay_event` post one event directly, for tests of the receiving end.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import json
import math
import queue
import random
import re
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any

import httpx
from svix.webhooks import Webhook

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

EMAILS_PATH = "/emails"
BATCH_PATH = "/emails/batch"
MAX_BATCH_EMAILS = 100
RATE_WINDOW_S = 1.0
VALIDATION_MODES = ("strict", "permissive")
IDEMPOTENCY_TTL_S = 24 * 3600.0
MAX_IDEMPOTENCY_KEY_CHARS = 256
DEFAULT_REJECTION = "The recipient address was refused by the provider"

_ADDRESS = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>.]+")
_NAMED_ADDRESS = re.compile(r"[^<>]*<\s*([^<>]+?)\s*>")


@dataclass(frozen=True)
class Reply:
    status: int
    retry_after_s: float | None = None
    error_name: str | None = None


@dataclass(frozen=True)
class FaultMix:
    """Shares of requests answered with a fault (the rest as usual), for `set_faults`."""

    server_error: float = 0.0  # answered 500 or 503, nothing delivered
    rate_limited: float = 0.0  # answered 429 with `retry-after`, nothing delivered
    late: float = 0.0  # delivered at arrival, answered only after `late_s`
    late_s: float = 0.0
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        if min(self.server_error, self.rate_limited, self.late) < 0 or (
            self.server_error + self.rate_limited + self.late > 1
        ):
            raise ValueError("fault shares are at least 0 and add up to at most 1")


@dataclass
class Request:
    at_s: float
    idempotency_key: str | None
    authorization: str | None
    body: Any  # a dict for /emails, a list of dicts for /emails/batch (None if not JSON)
    status: int
    arrived_s: float = 0.0  # when the request arrived, before latency and hang
    hung_s: float = 0.0  # how long it was held by a hang (or a late answer)
    fault: str | None = None  # the `FaultMix` fault drawn for it: `5xx`, `429`, `late`
    path: str = EMAILS_PATH
    emails: int = 1  # entries in the call: 1 for /emails, the list's length for a batch
    error: str | None = None  # the error's `name` when it was refused, e.g. `concurrent_idempotent_requests`

    @property
    def to(self) -> list[str]:
        """The recipients of the call (of every entry, for a batch)."""
        entries = self.body if isinstance(self.body, list) else [self.body]
        return [address for entry in entries if isinstance(entry, dict) for address in _recipients(entry)]


@dataclass
class Delivery:
    email_id: str
    idempotency_key: str | None
    body: dict[str, Any]
    at_s: float
    arrived_s: float = 0.0  # arrival of the request that delivered it
    path: str = EMAILS_PATH
    batch_index: int | None = None  # the entry's index in its batch; None for /emails

    @property
    def content_key(self) -> str:
        """A stable string from the recipients, subject, text and html: equal for the same email."""
        recipients = sorted(_bare(address).lower() for address in _recipients(self.body))
        parts = [recipients, self.body.get("subject"), self.body.get("text"), self.body.get("html")]
        return json.dumps(parts, sort_keys=True, ensure_ascii=False)


@dataclass
class WebhookSent:
    """One webhook POST the fake made, and what the receiver answered (None: no answer)."""

    event_id: str
    type: str
    email_id: str | None
    to: list[str]
    body: bytes
    headers: dict[str, str]
    status: int | None
    at_s: float
    attempt: int = 1

    @property
    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.body)
        return payload


@dataclass(frozen=True)
class _Bounce:
    type: str
    sub_type: str
    message: str


@dataclass
class _Answer:
    """What a key was first answered, replayed for a repeat with the same payload."""

    fingerprint: str
    status: int
    payload: dict[str, Any]
    deliveries: list[Delivery]
    stored_s: float = 0.0


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[Request] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    by_key: dict[str, _Answer] = field(default_factory=dict)
    scripts: dict[str, deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    down: Reply | None = None
    latency_s: float = 0.0
    hangs: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    hang_probability: float = 0.0
    hang_s: float = 0.0
    hang_only_batches: bool = False
    rng: random.Random = field(default_factory=random.Random)
    rate_limit_per_s: int | None = None
    accepted_arrivals_s: list[float] = field(default_factory=list)  # in arrival order
    rejected: dict[str, str] = field(default_factory=dict)  # lower-cased address -> message
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_retry_delays_s: tuple[float, ...] = ()
    bounces: dict[str, _Bounce] = field(default_factory=dict)  # lower-cased address -> bounce
    complaints: set[str] = field(default_factory=set)  # lower-cased addresses
    webhooks_sent: list[WebhookSent] = field(default_factory=list)
    in_flight: set[str] = field(default_factory=set)  # keys of requests not yet decided/answered
    idempotency_ttl_s: float = IDEMPOTENCY_TTL_S
    faults: FaultMix | None = None
    fault_seed: int = 0
    requests_by_key: Counter[str] = field(default_factory=Counter)


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 resets connections when a client opens dozens at once.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out closes its connection: not the fake's error, and no trace.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def _recipients(entry: dict[str, Any]) -> list[str]:
    to = entry.get("to")
    if isinstance(to, str):
        return [to]
    if isinstance(to, list):
        return [str(address) for address in to]
    return []


def _bare(address: str) -> str:
    """`Name <x@y.z>` -> `x@y.z`; anything else unchanged (stripped)."""
    named = _NAMED_ADDRESS.fullmatch(address.strip())
    return named.group(1) if named else address.strip()


def _error(status: int, message: str, name: str | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "name": name or ERROR_NAMES.get(status, "application_error"),
        "message": message,
    }


def _ceil_s(seconds: float) -> int:
    """Whole seconds, rounded up, at least 1 (as Resend's `retry-after`)."""
    return max(1, math.ceil(seconds - 1e-9))


class FakeResend:
    def __init__(self) -> None:
        self.state = _State()
        state = self.state
        fake = self

        class Handler(FakeHandler):
            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/")
                if path not in (EMAILS_PATH, BATCH_PATH):
                    self._read_body()
                    self._reply(404, {"statusCode": 404, "name": "not_found", "message": "Not found"})
                    return
                arrived_s, limited, rate_headers = fake._admit()
                raw = self._read_body()
                key = self.headers.get("Idempotency-Key")
                try:
                    body: Any = json.loads(raw or b"{}")
                except ValueError:
                    body = None
                batch = path == BATCH_PATH
                emails = (len(body) if isinstance(body, list) else 0) if batch else 1
                # Decided at arrival, without touching the key: a refusal, or a drawn fault.
                early, fault = fake._arrive(key, limited=limited)
                holding = early is None and key is not None  # this request holds its key
                hung_s = 0.0
                try:
                    if early is None and fault == "late":
                        # Accepted and recorded now; the answer leaves only after `late_s`.
                        status, payload, headers = fake._decide(self, path, key, body, arrived_s)
                        hung_s = state.faults.late_s if state.faults else 0.0
                        self._record(key, body, status, arrived_s, hung_s, path, emails, fault, payload)
                        time.sleep(hung_s)
                    else:
                        hung_s = 0.0 if early is not None else self._hang_for(key, batch=batch)
                        if hung_s:
                            time.sleep(hung_s)
                        if state.latency_s:
                            time.sleep(state.latency_s)
                        if early is not None:
                            status, payload, headers = early
                        else:
                            status, payload, headers = fake._decide(self, path, key, body, arrived_s)
                        self._record(key, body, status, arrived_s, hung_s, path, emails, fault, payload)
                finally:
                    if holding:
                        with state.lock:
                            state.in_flight.discard(key)
                self._reply(status, payload, {**rate_headers, **headers})

            def _record(
                self,
                key: str | None,
                body: Any,
                status: int,
                arrived_s: float,
                hung_s: float,
                path: str,
                emails: int,
                fault: str | None,
                payload: Any = None,
            ) -> None:
                error = payload.get("name") if status >= 400 and isinstance(payload, dict) else None
                with state.lock:
                    state.requests.append(
                        Request(
                            time.time(),
                            key,
                            self.headers.get("Authorization"),
                            body,
                            status,
                            arrived_s=arrived_s,
                            hung_s=hung_s,
                            path=path,
                            emails=emails,
                            fault=fault,
                            error=error if isinstance(error, str) else None,
                        )
                    )

            def _read_body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length)

            def _hang_for(self, key: str | None, *, batch: bool) -> float:
                with state.lock:
                    if key is not None and state.hangs.get(key):
                        return state.hangs[key].popleft()
                    if (
                        state.hang_probability
                        and (batch or not state.hang_only_batches)
                        and state.rng.random() < state.hang_probability
                    ):
                        return state.hang_s
                return 0.0

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
        self._webhooks: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self._webhook_thread: threading.Thread | None = None

    # --- the decisions (called with the state lock held, except `_admit`) ---

    def _admit(self) -> tuple[float, bool, dict[str, str]]:
        """At arrival: (arrival time, refused by the rate limit?, the `ratelimit-*` headers).

        The clock is read under the lock, so accepted arrivals are recorded in order and
        no window of `RATE_WINDOW_S` ever holds more than the limit.
        """
        state = self.state
        with state.lock:
            now_s = time.time()
            limit = state.rate_limit_per_s
            arrivals = state.accepted_arrivals_s
            if limit is None:
                arrivals.append(now_s)
                return now_s, False, {}
            first_in_window = bisect.bisect_right(arrivals, now_s - RATE_WINDOW_S)
            in_window = len(arrivals) - first_in_window
            if in_window >= limit:
                # The window frees when the oldest request still in it leaves.
                frees_in_s = _ceil_s(arrivals[first_in_window] + RATE_WINDOW_S - now_s)
                return (
                    now_s,
                    True,
                    {
                        "retry-after": str(frees_in_s),
                        "ratelimit-limit": str(limit),
                        "ratelimit-remaining": "0",
                        "ratelimit-reset": str(frees_in_s),
                    },
                )
            arrivals.append(now_s)
            oldest_s = arrivals[first_in_window]
            return (
                now_s,
                False,
                {
                    "ratelimit-limit": str(limit),
                    "ratelimit-remaining": str(limit - in_window - 1),
                    "ratelimit-reset": str(_ceil_s(oldest_s + RATE_WINDOW_S - now_s)),
                },
            )

    def _arrive(
        self, key: str | None, *, limited: bool
    ) -> tuple[tuple[int, dict[str, Any], dict[str, str]] | None, str | None]:
        """At arrival: (a reply that touches no key, if there is one; the fault drawn).

        With no early reply, a request with a key now holds it until answered (released
        by the caller): another request with that key meanwhile gets a 409.
        """
        state = self.state
        with state.lock:
            if limited:
                return (429, self._rate_limited_payload(), {}), None
            if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
                message = f"The idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"
                return (400, _error(400, message, "invalid_idempotency_key"), {}), None
            if key is not None and key in state.in_flight:
                message = "Same idempotency key used while the original request is still in progress"
                return (409, _error(409, message, "concurrent_idempotent_requests"), {}), None
            fault = self._draw_fault(key)
            mix = state.faults
            if fault == "5xx":
                status = 503 if self._fault_rng(key, "status").random() < 0.5 else 500
                return (status, _error(status, "Internal server error (injected)"), {}), fault
            if fault == "429" and mix is not None:
                payload = _error(429, "Too many requests (injected)")
                return (429, payload, {"retry-after": str(mix.retry_after_s)}), fault
            if key is not None:
                state.in_flight.add(key)
            return None, fault

    def _draw_fault(self, key: str | None) -> str | None:
        """The `FaultMix` fault of this request: from the key, its count so far and the seed."""
        state = self.state
        mix = state.faults
        counted = key if key is not None else "\0no-key"
        state.requests_by_key[counted] += 1
        if mix is None:
            return None
        draw = self._fault_rng(key, "fault").random()
        for name, share in (("5xx", mix.server_error), ("429", mix.rate_limited), ("late", mix.late)):
            if draw < share:
                return name
            draw -= share
        return None

    def _fault_rng(self, key: str | None, purpose: str) -> random.Random:
        counted = key if key is not None else "\0no-key"
        nth = self.state.requests_by_key[counted]
        return random.Random(f"{self.state.fault_seed}:{purpose}:{counted}:{nth}")

    def _decide(
        self, handler: FakeHandler, path: str, key: str | None, body: Any, arrived_s: float
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self.state.lock:
            if body is None:
                return 400, _error(400, "The body is not valid JSON"), {}
            if path == BATCH_PATH:
                mode = (handler.headers.get("x-batch-validation") or "strict").strip().lower()
                return self._decide_batch(key, body, mode, arrived_s)
            return self._decide_single(key, body, arrived_s)

    def _rate_limited_payload(self) -> dict[str, Any]:
        limit = self.state.rate_limit_per_s
        return _error(
            429,
            f"Too many requests. You can only make {limit} requests per second. "
            "See rate limit response headers for more information.",
        )

    def _forced(self, key: str | None) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """A reply from `set_down` or a script for this key, if there is one."""
        state = self.state
        reply = state.down
        if reply is None and key is not None and state.scripts.get(key):
            reply = state.scripts[key].popleft()
        if reply is None:
            return None
        headers: dict[str, str] = {}
        if reply.retry_after_s is not None:
            headers["retry-after"] = str(reply.retry_after_s)
        return reply.status, _error(reply.status, f"scripted {reply.status}", reply.error_name), headers

    def _invalid(self, entry: Any) -> str | None:
        """Why this email would be refused, or None if it is valid."""
        if not isinstance(entry, dict):
            return "Each email must be an object"
        for name in ("from", "to", "subject"):
            if not entry.get(name):
                return f"Missing `{name}` field."
        to = entry["to"]
        if not isinstance(to, str | list):
            return "Invalid `to` field. It must be a string or a list of strings."
        for address in _recipients(entry):
            if not _ADDRESS.fullmatch(_bare(address)):
                return (
                    "Invalid `to` field. The email address needs to follow the "
                    "`email@example.com` or `Name <email@example.com>` format."
                )
            rejection = self.state.rejected.get(_bare(address).lower())
            if rejection is not None:
                return rejection
        return None

    def _replay(self, key: str | None, fingerprint: str) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """The first answer for this key if the payload is the same; a 409 if not; None if new."""
        if key is None or key not in self.state.by_key:
            return None
        answer = self.state.by_key[key]
        if time.time() - answer.stored_s >= self.state.idempotency_ttl_s:
            del self.state.by_key[key]  # expired: the key may be used again
            return None
        if answer.fingerprint != fingerprint:
            return 409, _error(409, "Same idempotency key used with a different payload"), {}
        return answer.status, answer.payload, {}

    def _deliver(
        self, key: str | None, entry: dict[str, Any], arrived_s: float, path: str, index: int | None
    ) -> Delivery:
        delivery = Delivery(
            str(uuid.uuid4()), key, entry, time.time(), arrived_s=arrived_s, path=path, batch_index=index
        )
        self.state.deliveries.append(delivery)
        if self.state.webhook_url is not None:
            self._webhooks.put(delivery)
        return delivery

    def _decide_single(
        self, key: str | None, body: Any, arrived_s: float
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        forced = self._forced(key)
        if forced is not None:
            return forced
        problem = self._invalid(body)
        if problem is not None:
            return 422, _error(422, problem), {}
        fingerprint = json.dumps([EMAILS_PATH, body], sort_keys=True)
        replayed = self._replay(key, fingerprint)
        if replayed is not None:
            return replayed
        delivery = self._deliver(key, body, arrived_s, EMAILS_PATH, None)
        payload = {"id": delivery.email_id}
        if key is not None:
            self.state.by_key[key] = _Answer(fingerprint, 200, payload, [delivery], time.time())
        return 200, payload, {}

    def _decide_batch(
        self, key: str | None, body: Any, mode: str, arrived_s: float
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        forced = self._forced(key)
        if forced is not None:
            return forced
        if mode not in VALIDATION_MODES:
            return 422, _error(422, "`x-batch-validation` must be `strict` or `permissive`"), {}
        if not isinstance(body, list) or not body:
            return 422, _error(422, "The body must be a list of 1 to 100 emails"), {}
        if len(body) > MAX_BATCH_EMAILS:
            return 422, _error(422, f"Too many emails in the batch: {len(body)}, at most 100"), {}
        problems = {index: self._invalid(entry) for index, entry in enumerate(body)}
        errors = [{"index": index, "message": problem} for index, problem in problems.items() if problem]
        if errors and mode == "strict":
            first = errors[0]
            return 422, _error(422, f"emails[{first['index']}]: {first['message']}"), {}
        fingerprint = json.dumps([BATCH_PATH, mode, body], sort_keys=True)
        replayed = self._replay(key, fingerprint)
        if replayed is not None:
            return replayed
        deliveries = [
            self._deliver(key, entry, arrived_s, BATCH_PATH, index)
            for index, entry in enumerate(body)
            if problems[index] is None
        ]
        payload: dict[str, Any] = {"data": [{"id": delivery.email_id} for delivery in deliveries]}
        if mode == "permissive":
            payload["errors"] = errors
        if key is not None:
            self.state.by_key[key] = _Answer(fingerprint, 200, payload, deliveries, time.time())
        return 200, payload, {}

    # --- the public API ---

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeResend:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._webhook_thread is not None:
            self._webhooks.put(None)
            self._webhook_thread.join(timeout=10)

    def script(self, idempotency_key: str, *replies: Reply) -> None:
        """The next requests with this key get these replies, in order; then success."""
        with self.state.lock:
            self.state.scripts[idempotency_key].extend(replies)

    def hang(self, idempotency_key: str, *seconds: float) -> None:
        """The next requests with this key are each held this long, then answered as usual."""
        with self.state.lock:
            self.state.hangs[idempotency_key].extend(seconds)

    def set_hang_probability(
        self, probability: float, seconds: float, *, seed: int | None = None, only_batches: bool = False
    ) -> None:
        """Hold each request (any key) for `seconds` with this probability; 0 turns it off.

        With `only_batches`, only `/emails/batch` calls are held.
        """
        with self.state.lock:
            self.state.hang_probability = probability
            self.state.hang_s = seconds
            self.state.hang_only_batches = only_batches
            self.state.rng = random.Random(seed)

    def set_faults(self, mix: FaultMix | None, *, seed: int = 0) -> None:
        """Answer shares of requests with faults (see `FaultMix`); None turns them off.

        A request's fault depends only on `seed`, its key and how many requests with that
        key came before it, so the same jobs meet the same faults in every run.
        """
        with self.state.lock:
            self.state.faults = mix
            self.state.fault_seed = seed

    def set_idempotency_ttl(self, seconds: float) -> None:
        """Keep each key's answer this long (Resend: 24 h, the default)."""
        with self.state.lock:
            self.state.idempotency_ttl_s = seconds

    def set_down(self, reply: Reply | None) -> None:
        """Answer every request with `reply` until called with None."""
        with self.state.lock:
            self.state.down = reply

    def set_rate_limit(self, per_s: int | None) -> None:
        """Let at most `per_s` requests through per rolling second (None: no limit, the default)."""
        if per_s is not None and per_s < 1:
            raise ValueError("per_s must be at least 1, or None")
        with self.state.lock:
            self.state.rate_limit_per_s = per_s

    def reject_address(self, address: str, message: str = DEFAULT_REJECTION) -> None:
        """Answer emails to this address with a 422 `validation_error` (a batch entry: an error)."""
        with self.state.lock:
            self.state.rejected[_bare(address).lower()] = message

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

    def duplicates_by_content(self) -> dict[str, int]:
        """Content keys delivered more than once (in or across batches, under any key), with counts."""
        counts = Counter(delivery.content_key for delivery in self.deliveries)
        return {content: count for content, count in counts.items() if count > 1}

    def accepted_arrivals_s(self) -> list[float]:
        """Arrival times (epoch seconds) of the requests the rate limit let through, in order."""
        with self.state.lock:
            return list(self.state.accepted_arrivals_s)

    def max_accepted_in_any_window(self, window_s: float = RATE_WINDOW_S) -> int:
        """The most accepted arrivals within any half-open window `[t, t + window_s)`."""
        arrivals = sorted(self.accepted_arrivals_s())
        most = 0
        end = 0
        for start, start_s in enumerate(arrivals):
            while end < len(arrivals) and arrivals[end] < start_s + window_s:
                end += 1
            most = max(most, end - start)
        return most

    def count_by_fault(self) -> dict[str, int]:
        """How many requests met each `FaultMix` fault."""
        return dict(Counter(request.fault for request in self.requests if request.fault))

    def deliveries_by_content(self) -> dict[str, int]:
        """How many times each email (by `Delivery.content_key`) was delivered."""
        return dict(Counter(delivery.content_key for delivery in self.deliveries))

    def count_by_status(self) -> dict[int, int]:
        """How many requests were answered with each HTTP status (404s for other paths aside)."""
        return dict(Counter(request.status for request in self.requests))

    # --- webhooks ---

    def configure_webhooks(self, url: str, secret: str, *, retry_delays_s: tuple[float, ...] = ()) -> None:
        """POST Svix-signed events for every email accepted from now on to `url`.

        An answer other than 2xx (or none) is tried again after each of `retry_delays_s`,
        with the same `svix-id` and a new timestamp, as Svix does; by default, never.
        """
        with self.state.lock:
            self.state.webhook_url = url
            self.state.webhook_secret = secret
            self.state.webhook_retry_delays_s = tuple(retry_delays_s)
            if self._webhook_thread is None:
                self._webhook_thread = threading.Thread(target=self._post_webhooks, daemon=True)
                self._webhook_thread.start()

    def bounce_address(
        self,
        address: str,
        type: str = "Permanent",
        *,
        sub_type: str = "General",
        message: str = "The recipient's mail server permanently rejected the email.",
    ) -> None:
        """Emails to this address are accepted, then reported `email.bounced` with this bounce."""
        with self.state.lock:
            self.state.bounces[_bare(address).lower()] = _Bounce(type, sub_type, message)

    def complain_address(self, address: str) -> None:
        """Emails to this address are reported delivered, then `email.complained`."""
        with self.state.lock:
            self.state.complaints.add(_bare(address).lower())

    @property
    def webhooks_sent(self) -> list[WebhookSent]:
        with self.state.lock:
            return list(self.state.webhooks_sent)

    def send_event(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        event_id: str | None = None,
        timestamp_s: float | None = None,
        secret: str | None = None,
    ) -> WebhookSent:
        """POST one event now (blocking), signed with `secret` (default: the configured one)."""
        url, configured = self._webhook_target()
        body = json.dumps(_event_payload(event_type, data)).encode()
        headers = _signed_headers(
            secret or configured, event_id or _new_event_id(), timestamp_s or time.time(), body
        )
        return self._post(url, event_type, data, body, headers)

    def send_forged_event(self, event_type: str, data: dict[str, Any]) -> WebhookSent:
        """POST one event signed with a secret that is not the configured one."""
        return self.send_event(event_type, data, secret=new_webhook_secret())

    def replay_event(self, sent: WebhookSent) -> WebhookSent:
        """POST exactly the same request again: body, `svix-id`, timestamp and signature."""
        url, _ = self._webhook_target()
        data: dict[str, Any] = sent.payload.get("data") or {}
        return self._post(url, sent.type, data, sent.body, dict(sent.headers))

    def _webhook_target(self) -> tuple[str, str]:
        with self.state.lock:
            url, secret = self.state.webhook_url, self.state.webhook_secret
        if url is None or secret is None:
            raise RuntimeError("call configure_webhooks(url, secret) first")
        return url, secret

    def _post(
        self,
        url: str,
        event_type: str,
        data: dict[str, Any],
        body: bytes,
        headers: dict[str, str],
        attempt: int = 1,
    ) -> WebhookSent:
        try:
            with httpx.Client(timeout=10) as client:
                status: int | None = client.post(url, content=body, headers=headers).status_code
        except httpx.HTTPError:
            status = None
        sent = WebhookSent(
            event_id=headers["svix-id"],
            type=event_type,
            email_id=data.get("email_id"),
            to=list(data.get("to") or []),
            body=body,
            headers=headers,
            status=status,
            at_s=time.time(),
            attempt=attempt,
        )
        with self.state.lock:
            self.state.webhooks_sent.append(sent)
        return sent

    def _post_webhooks(self) -> None:
        """The background sender: each accepted email's events, in order, one at a time."""
        while (delivery := self._webhooks.get()) is not None:
            with self.state.lock:
                url, secret = self.state.webhook_url, self.state.webhook_secret
                delays_s = self.state.webhook_retry_delays_s
                recipients = [_bare(a).lower() for a in _recipients(delivery.body)]
                bounce = next((self.state.bounces[a] for a in recipients if a in self.state.bounces), None)
                complained = any(a in self.state.complaints for a in recipients)
            if url is None or secret is None:
                continue
            for event_type, data in _events_for(delivery, bounce, complained):
                body = json.dumps(_event_payload(event_type, data)).encode()
                event_id = _new_event_id()
                for attempt, delay_s in enumerate((0.0, *delays_s), start=1):
                    time.sleep(delay_s)
                    headers = _signed_headers(secret, event_id, time.time(), body)
                    sent = self._post(url, event_type, data, body, headers, attempt)
                    if sent.status is not None and 200 <= sent.status < 300:
                        break


def new_webhook_secret() -> str:
    """A random signing secret in Resend's (Svix's) form, `whsec_<base64>`."""
    return "whsec_" + base64.b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).decode()


def _new_event_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def _iso(at_s: float) -> str:
    return datetime.fromtimestamp(at_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event_payload(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": event_type, "created_at": _iso(time.time()), "data": data}


def _signed_headers(secret: str, event_id: str, timestamp_s: float, body: bytes) -> dict[str, str]:
    at = datetime.fromtimestamp(int(timestamp_s), UTC)
    return {
        "content-type": "application/json",
        "svix-id": event_id,
        "svix-timestamp": str(int(timestamp_s)),
        "svix-signature": Webhook(secret).sign(event_id, at, body.decode()),
    }


def _events_for(
    delivery: Delivery, bounce: _Bounce | None, complained: bool
) -> list[tuple[str, dict[str, Any]]]:
    """The events Resend would send about one accepted email, in order, with their `data`."""
    entry = delivery.body
    data: dict[str, Any] = {
        "created_at": _iso(delivery.at_s),
        "email_id": delivery.email_id,
        "from": entry.get("from"),
        "to": _recipients(entry),
        "subject": entry.get("subject"),
    }
    tags = entry.get("tags")
    if isinstance(tags, list):
        data["tags"] = {t["name"]: t["value"] for t in tags if isinstance(t, dict) and "name" in t}
    if bounce is not None:
        bounced = {
            **data,
            "bounce": {"type": bounce.type, "subType": bounce.sub_type, "message": bounce.message},
        }
        return [("email.sent", data), ("email.bounced", bounced)]
    events = [("email.sent", data), ("email.delivered", data)]
    if complained:
        events.append(("email.complained", data))
    return events
