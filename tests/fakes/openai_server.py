"""A local HTTP server that speaks OpenAI's `POST /v1/chat/completions` wire format.

Answers are scripted per request: `script("over_limit", "good")` makes the next two
requests answer with too-long copy and then with good copy; when the script is empty
every request gets `default` (``good``). Behaviours:

- ``good``: copy within the limits of the platform named in the request, as JSON of the
  requested schema;
- ``over_limit``: the same, with every headline too long for the platform;
- ``bad_schema``: JSON that does not match the schema (no ``variants``);
- ``shortest`` / ``longest``: the shortest / longest answer that the request's
  ``response_format.json_schema.schema`` allows, built from that schema alone
  (`tests.fakes.schema_answers`): this fake knows no platform rules;
- ``refusal``: ``message.refusal`` set and ``content`` null;
- ``length``: ``finish_reason`` ``"length"`` with cut-off JSON;
- ``rate_limited`` (429, ``retry-after: 2``), ``server_error`` (500), ``bad_request`` (400),
  ``unauthorized`` (401), ``not_found`` (404): OpenAI's error JSON body.

OpenAI's rate limits, requests and tokens per rolling minute, are off unless set:
``FakeOpenAI(limits=RateLimits(requests_per_min=60, tokens_per_min=40_000))``
(`tests.fakes.openai_limits`). A request over a limit is answered 429 before any
behaviour is taken from the script; with limits set, every answer carries the
``x-ratelimit-*`` headers and ``usage.prompt_tokens`` is the limiter's estimate.

Any behaviour can be delayed: ``Behaviour("good", delay_s=5)``; copy can come with the
wrong number of variants: ``Behaviour("good", variants=2)``. A callable in the script
picks the behaviour from the recorded request.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from processors.ads.platforms import LIMITS, Platform
from tests.fakes.http import FakeHandler
from tests.fakes.openai_limits import Admission, RateLimits
from tests.fakes.schema_answers import UnboundedSchema, UnsupportedSchema, extreme_value

PLATFORM_RE = re.compile(r"Platform: ([A-Z_]+)")
VARIANTS_RE = re.compile(r"Number of variants: (\d+)")

_ERRORS: dict[str, tuple[int, str, str | None, str]] = {
    "rate_limited": (429, "rate_limit_exceeded", "requests", "Rate limit reached for requests."),
    "server_error": (500, "server_error", None, "The server had an error processing your request."),
    "bad_request": (400, "invalid_request_error", None, "Invalid value for 'messages'."),
    "unauthorized": (
        401,
        "invalid_request_error",
        None,
        "Incorrect API key provided: sk-tes***********cret.",
    ),
    "not_found": (404, "invalid_request_error", None, "The model `gpt-nope` does not exist."),
}
_ERROR_CODES = {
    "rate_limited": "rate_limit_exceeded",
    "unauthorized": "invalid_api_key",
    "not_found": "model_not_found",
}


@dataclass(frozen=True)
class Behaviour:
    kind: str
    delay_s: float = 0.0
    retry_after: str | None = "2"
    # For `good`/`over_limit`: this many variants instead of the number asked for.
    variants: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    behaviour: str

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    def text(self) -> str:
        return "\n".join(str(m.get("content") or "") for m in self.messages)


Script = Behaviour | str | Callable[[Request], "Behaviour | str"]


class FakeOpenAI:
    def __init__(self, *, model: str = "gpt-fake-2025-01-01", limits: RateLimits | None = None) -> None:
        self.model = model
        self.limits = limits
        self.default: Behaviour | str = "good"
        self._lock = threading.Lock()
        self._script: deque[Script] = deque()
        self._requests: list[Request] = []
        self._stopping = threading.Event()
        fake = self

        class Handler(FakeHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw or b"{}")
                request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body, "")
                admission = fake._admit(request)
                if admission is not None and not admission.accepted:
                    request.behaviour = "rate_limited"
                    with fake._lock:
                        fake._requests.append(request)
                    self._reply(429, admission.payload or {}, admission.headers)
                    return
                behaviour = fake._next(request)
                request.behaviour = behaviour.kind
                with fake._lock:
                    fake._requests.append(request)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._reply(404, {"error": {"message": "Unknown path", "type": "invalid_request_error"}})
                    return
                # Interruptible, so stopping the server never waits for a slow reply.
                if behaviour.delay_s and fake._stopping.wait(behaviour.delay_s):
                    return
                status, payload, headers = fake._answer(behaviour, request)
                if admission is not None and fake.limits is not None:
                    headers = {**admission.headers, **headers}
                    fake.limits.answered(payload, admission)
                self._reply(status, payload, {**headers, **behaviour.headers})

            def _reply(
                self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll keeps `stop()` quick: shutdown waits for the next poll.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        """The base URL to give the OpenAI client (ends in ``/v1``)."""
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}/v1"

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def script(self, *behaviours: Script) -> None:
        """The next requests get these behaviours, in order; then `default`."""
        with self._lock:
            self._script.extend(behaviours)

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    def _admit(self, request: Request) -> Admission | None:
        if self.limits is None or request.path.rstrip("/") != "/v1/chat/completions":
            return None
        return self.limits.admit(request.body)

    def _next(self, request: Request) -> Behaviour:
        with self._lock:
            item: Script = self._script.popleft() if self._script else self.default
        if callable(item):
            item = item(request)
        return item if isinstance(item, Behaviour) else Behaviour(item)

    def _answer(self, behaviour: Behaviour, request: Request) -> tuple[int, dict[str, Any], dict[str, str]]:
        kind = behaviour.kind
        if kind in _ERRORS:
            status, error_type, param, message = _ERRORS[kind]
            headers = {}
            if kind == "rate_limited" and behaviour.retry_after is not None:
                headers["retry-after"] = behaviour.retry_after
            error = {"message": message, "type": error_type, "param": param, "code": _ERROR_CODES.get(kind)}
            return status, {"error": error}, headers
        content: str | None
        refusal: str | None = None
        finish_reason = "stop"
        if kind == "good":
            content = json.dumps(self._copy(request, over_limit=False, variants=behaviour.variants))
        elif kind == "over_limit":
            content = json.dumps(self._copy(request, over_limit=True, variants=behaviour.variants))
        elif kind == "bad_schema":
            content = json.dumps({"ads": ["Buy now"]})
        elif kind in ("shortest", "longest"):
            schema = ((request.body.get("response_format") or {}).get("json_schema") or {}).get("schema")
            if not isinstance(schema, dict):
                return _invalid_request("this behaviour needs response_format.json_schema.schema")
            try:
                content = json.dumps(extreme_value(schema, "shortest" if kind == "shortest" else "longest"))
            except (UnboundedSchema, UnsupportedSchema) as error:
                return _invalid_request(f"Invalid schema for response_format: {error}")
        elif kind == "refusal":
            content, refusal = None, "I'm sorry, I can't help with that request."
        elif kind == "length":
            content, finish_reason = '{"variants": [{"headline": "Glare-free', "length"
        else:
            raise ValueError(f"unknown behaviour {kind!r}")
        return 200, self._completion(content, refusal, finish_reason), {}

    def _completion(self, content: str | None, refusal: str | None, finish_reason: str) -> dict[str, Any]:
        completion_tokens = len(content or refusal or "") // 4 + 1
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": content,
                        "refusal": refusal,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": 120,
                "completion_tokens": completion_tokens,
                "total_tokens": 120 + completion_tokens,
            },
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    @staticmethod
    def _copy(request: Request, *, over_limit: bool, variants: int | None) -> dict[str, Any]:
        text = request.text()
        platform_match = PLATFORM_RE.search(text)
        count_match = VARIANTS_RE.search(text)
        platform = Platform(platform_match.group(1)) if platform_match else Platform.GOOGLE_SEARCH
        count = variants or (int(count_match.group(1)) if count_match else 3)
        limits = LIMITS[platform]
        headline_chars = limits.headline_chars + 5 if over_limit else limits.headline_chars
        copies = []
        for number in range(1, count + 1):
            headline = f"Light that works late {number} " * 10
            body = f"Variant {number}: warm, flicker-free light for long evenings. " * 10
            cut = headline[:headline_chars]
            copies.append(
                {
                    "headline": cut.rstrip().ljust(headline_chars, "!") if over_limit else cut.strip(),
                    "body": body[: limits.body_chars].strip(),
                    "call_to_action": limits.call_to_actions[0] if limits.call_to_actions else None,
                }
            )
        return {"variants": copies}


def _invalid_request(message: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    error = {"message": message, "type": "invalid_request_error", "param": "response_format", "code": None}
    return 400, {"error": error}, {}
