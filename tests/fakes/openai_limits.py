"""OpenAI's rate limits for the fake model server: requests and tokens per rolling minute.

As OpenAI does, a request is admitted or refused when it arrives, and counted against
both limits at once:

- **requests**: each admitted request counts 1;
- **tokens**: what OpenAI's limiter counts before the model runs, an estimate from the
  request's characters (it does not tokenize): the characters of every message's content
  and of the `response_format` schema, one token per 4 (OpenAI's rule of thumb), plus
  the tokens the request asks for at most (`max_completion_tokens`, or `max_tokens`;
  none asked: none counted), times `n`. The charge is never corrected by the answer.

OpenAI may also enforce a limit over shorter periods ("quantized": 60,000 RPM as 1,000
requests a second); `quantum_s=10` does that for requests: no more than
`ceil(requests_per_min * 10 / 60)` in any rolling 10 s either.

A request that would take either count over its limit within the last 60 s is answered
429 with OpenAI's body, `{"error": {"message": ..., "type": "requests" | "tokens",
"param": null, "code": "rate_limit_exceeded"}}`, and `retry-after` (whole seconds,
rounded up) and `retry-after-ms`: the time until enough of the window has gone by.
Refused requests count nothing. Every answer, 429 or not, carries OpenAI's headers:
`x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
`x-ratelimit-reset-requests` (the time until the window is empty, as `1s`, `6m0s` or
`20ms`), and the same for tokens, for each limit that is set.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 60.0
CHARS_PER_TOKEN = 4


def content_chars(content: Any) -> int:
    """Characters of a message's content: a string, or a list of text parts."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(str(part.get("text") or "")) for part in content if isinstance(part, dict))
    return 0


def prompt_tokens(body: dict[str, Any]) -> int:
    """OpenAI's estimate of a request's prompt tokens, from its characters."""
    chars = sum(content_chars(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict))
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        chars += len(json.dumps(response_format.get("json_schema") or {}))
    return math.ceil(chars / CHARS_PER_TOKEN)


def requested_tokens(body: dict[str, Any]) -> int:
    """The tokens a request counts against the limit: prompt estimate + output asked for, times n."""
    asked = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    choices = body.get("n") or 1
    return prompt_tokens(body) + int(asked) * int(choices)


def duration(seconds: float) -> str:
    """OpenAI's reset format: `20ms`, `1s`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


@dataclass(frozen=True)
class Admission:
    accepted: bool
    tokens: int  # charged (accepted) or asked for (refused)
    prompt_tokens: int
    headers: dict[str, str]
    refused_on: str | None = None  # "requests" or "tokens"
    payload: dict[str, Any] | None = None  # the 429 body


@dataclass
class _Entry:
    at_s: float
    tokens: int


@dataclass
class LimitCounts:
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=lambda: {"requests": 0, "tokens": 0})
    tokens_charged: int = 0
    # The `usage` of the answers (admitted requests answered 200).
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def rate_limited(self) -> int:
        return sum(self.refused.values())


class RateLimits:
    """Requests and tokens per rolling minute (None: that one is not limited). Thread-safe."""

    def __init__(
        self,
        *,
        requests_per_min: int | None = None,
        tokens_per_min: int | None = None,
        quantum_s: float | None = None,
        model: str = "gpt-fake",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.requests_per_min = requests_per_min
        self.quantum_s = quantum_s
        self.requests_per_quantum = (
            math.ceil(requests_per_min * quantum_s / WINDOW_S)
            if quantum_s is not None and requests_per_min is not None
            else None
        )
        self.tokens_per_min = tokens_per_min
        self.model = model
        self._clock = clock
        self._lock = threading.Lock()
        self._window: deque[_Entry] = deque()
        self._admitted: list[tuple[float, int]] = []  # every admitted request: (time, tokens)
        self._refused: list[float] = []  # when each refused request came
        self.counts = LimitCounts()

    def admit(self, body: dict[str, Any]) -> Admission:
        prompt = prompt_tokens(body)
        tokens = requested_tokens(body)
        with self._lock:
            now_s = self._clock()
            while self._window and self._window[0].at_s + WINDOW_S <= now_s:
                self._window.popleft()
            used_requests = len(self._window)
            used_tokens = sum(e.tokens for e in self._window)
            refused_on = None
            wait_s = 0.0
            quantum = self._quantum(now_s)
            if self.requests_per_quantum is not None and len(quantum) >= self.requests_per_quantum:
                refused_on = "requests"
                wait_s = quantum[-self.requests_per_quantum].at_s + (self.quantum_s or 0) - now_s
            elif not self._fits(used_requests, 0):
                refused_on = "requests"
            elif not self._fits(0, used_tokens + tokens):
                refused_on = "tokens"
            if refused_on is None:
                self._window.append(_Entry(now_s, tokens))
                self._admitted.append((now_s, tokens))
                self.counts.accepted += 1
                self.counts.tokens_charged += tokens
                used_requests += 1
                used_tokens += tokens
            else:
                self.counts.refused[refused_on] += 1
                self._refused.append(now_s)
                wait_s = max(wait_s, self._frees_in(now_s, tokens))
            headers = self._headers(now_s, used_requests, used_tokens)
        if refused_on is None:
            return Admission(True, tokens, prompt, headers)
        limit = self.requests_per_min if refused_on == "requests" else self.tokens_per_min
        used = used_requests if refused_on == "requests" else used_tokens
        asked = 1 if refused_on == "requests" else tokens
        unit = "requests per min (RPM)" if refused_on == "requests" else "tokens per min (TPM)"
        message = (
            f"Rate limit reached for {self.model} in organization org-fake on {unit}: "
            f"Limit {limit}, Used {used}, Requested {asked}. Please try again in {duration(wait_s)}. "
            "Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        headers["retry-after"] = str(max(1, math.ceil(wait_s)))
        headers["retry-after-ms"] = str(max(1, math.ceil(wait_s * 1000)))
        payload = {
            "error": {"message": message, "type": refused_on, "param": None, "code": "rate_limit_exceeded"}
        }
        return Admission(False, tokens, prompt, headers, refused_on, payload)

    def answered(self, payload: dict[str, Any], admission: Admission) -> None:
        """An admitted request's answer: its `usage` reports the limiter's prompt estimate as
        the prompt's tokens (there is no tokenizer here), and is counted."""
        usage = payload.get("usage")
        if not isinstance(usage, dict):
            return
        completion = int(usage.get("completion_tokens") or 0)
        usage["prompt_tokens"] = admission.prompt_tokens
        usage["total_tokens"] = admission.prompt_tokens + completion
        with self._lock:
            self.counts.prompt_tokens += admission.prompt_tokens
            self.counts.completion_tokens += completion

    def _quantum(self, now_s: float) -> list[_Entry]:
        if self.quantum_s is None:
            return []
        return [e for e in self._window if e.at_s > now_s - self.quantum_s]

    def _fits(self, requests: int, tokens: int) -> bool:
        """One more request of `tokens` fits next to `requests` requests, under both limits."""
        if self.requests_per_min is not None and requests + 1 > self.requests_per_min:
            return False
        return self.tokens_per_min is None or tokens <= self.tokens_per_min

    def _frees_in(self, now_s: float, tokens: int) -> float:
        """Seconds until enough of the window has gone by to let a request of `tokens` in."""
        requests, held = len(self._window), sum(e.tokens for e in self._window)
        if self._fits(requests, held + tokens):
            return 0.0
        for entry in self._window:
            requests -= 1
            held -= entry.tokens
            if self._fits(requests, held + tokens):
                return max(0.0, entry.at_s + WINDOW_S - now_s)
        return WINDOW_S  # larger than the whole limit: never, but say a minute

    def _headers(self, now_s: float, used_requests: int, used_tokens: int) -> dict[str, str]:
        empty_in_s = self._window[-1].at_s + WINDOW_S - now_s if self._window else 0.0
        headers = {}
        if self.requests_per_min is not None:
            headers["x-ratelimit-limit-requests"] = str(self.requests_per_min)
            headers["x-ratelimit-remaining-requests"] = str(max(0, self.requests_per_min - used_requests))
            headers["x-ratelimit-reset-requests"] = duration(empty_in_s)
        if self.tokens_per_min is not None:
            headers["x-ratelimit-limit-tokens"] = str(self.tokens_per_min)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, self.tokens_per_min - used_tokens))
            headers["x-ratelimit-reset-tokens"] = duration(empty_in_s)
        return headers

    def admitted(self) -> list[tuple[float, int]]:
        """Every admitted request, in order: (time by the limiter's clock, tokens charged)."""
        with self._lock:
            return list(self._admitted)

    def refused(self) -> list[float]:
        """When each refused request came, by the limiter's clock."""
        with self._lock:
            return list(self._refused)

    def most_in_any_window(self) -> tuple[int, int]:
        """The most requests, and the most tokens, admitted within any rolling minute."""
        admitted = self.admitted()
        most_requests = most_tokens = 0
        first = 0
        tokens = 0
        for last, (at_s, charged) in enumerate(admitted):
            tokens += charged
            while admitted[first][0] + WINDOW_S <= at_s:
                tokens -= admitted[first][1]
                first += 1
            most_requests = max(most_requests, last - first + 1)
            most_tokens = max(most_tokens, tokens)
        return most_requests, most_tokens
