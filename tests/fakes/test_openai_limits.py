"""The fake model server's rate limits answer as OpenAI's do: requests and tokens per
rolling minute, a 429 with OpenAI's body and retry headers, rate headers on every answer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest

from processors.ads.provider_errors import classify
from processors.errors import TransientError
from tests.fakes.openai_limits import RateLimits, duration, requested_tokens
from tests.fakes.openai_server import FakeOpenAI


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@contextmanager
def limited(clock: Clock, **limits: Any) -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(limits=RateLimits(clock=clock, **limits)).start()
    try:
        yield server
    finally:
        server.stop()


def body(prompt: str = "x" * 400, max_tokens: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"model": "gpt-fake", "messages": [{"role": "user", "content": prompt}]}
    if max_tokens is not None:
        data["max_completion_tokens"] = max_tokens
    return data


def post(server: FakeOpenAI, data: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/chat/completions", json=data, timeout=5)


def test_a_request_counts_its_prompt_characters_by_four_and_the_output_it_asks_for() -> None:
    assert requested_tokens(body("x" * 401)) == 101
    assert requested_tokens(body("x" * 400, max_tokens=300)) == 400
    assert requested_tokens({**body("x" * 400), "max_tokens": 300, "n": 2}) == 700
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}
    assert requested_tokens({**body(""), "response_format": schema}) > 0
    assert [duration(s) for s in (0.02, 1, 1.5, 360)] == ["20ms", "1s", "1.5s", "6m0s"]


def test_requests_over_the_limit_in_a_rolling_minute_are_answered_429(clock: Clock) -> None:
    with limited(clock, requests_per_min=2) as server:
        first = post(server, body())
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert first.headers["x-ratelimit-reset-requests"] == "1m0s"
        clock.now_s += 20
        assert post(server, body()).headers["x-ratelimit-remaining-requests"] == "0"
        clock.now_s += 10
        refused = post(server, body())
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "requests"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert "requests per min (RPM): Limit 2, Used 2, Requested 1" in refused.json()["error"]["message"]
        # The first leaves the window 60 s after it came: in 30 s.
        assert refused.headers["retry-after"] == "30"
        assert refused.headers["retry-after-ms"] == "30000"
        clock.now_s += 30
        assert post(server, body()).status_code == 200
        assert server.limits is not None
        assert (server.limits.counts.accepted, server.limits.counts.rate_limited) == (3, 1)
        assert server.limits.most_in_any_window() == (2, 200)
        assert [r.behaviour for r in server.requests] == ["good", "good", "rate_limited", "good"]


def test_tokens_over_the_limit_are_answered_429_and_the_usage_is_the_estimate(clock: Clock) -> None:
    with limited(clock, tokens_per_min=1_000) as server:
        accepted = post(server, body("x" * 400, max_tokens=500))  # 600 tokens
        assert accepted.status_code == 200
        assert accepted.json()["usage"]["prompt_tokens"] == 100
        assert accepted.headers["x-ratelimit-remaining-tokens"] == "400"
        assert "x-ratelimit-limit-requests" not in accepted.headers
        clock.now_s += 0.5
        refused = post(server, body("x" * 400, max_tokens=500))
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "tokens"
        assert refused.headers["retry-after"] == "60"  # 59.5 s, rounded up
        assert refused.headers["retry-after-ms"] == "59500"
        assert post(server, body("x" * 400, max_tokens=300)).status_code == 200  # 400 fits
        assert server.limits is not None
        assert server.limits.counts.refused == {"requests": 0, "tokens": 1}
        assert server.limits.counts.tokens_charged == 1_000
        assert server.limits.counts.prompt_tokens == 200
        assert server.limits.counts.completion_tokens > 0


def test_quantized_requests_hold_over_shorter_periods_too(clock: Clock) -> None:
    with limited(clock, requests_per_min=120, quantum_s=1) as server:
        assert [post(server, body()).status_code for _ in range(3)] == [200, 200, 429]
        clock.now_s += 0.25
        refused = post(server, body())
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "requests"
        assert refused.headers["retry-after-ms"] == "750"
        clock.now_s += 0.75
        assert post(server, body()).status_code == 200


def test_the_sdk_reads_the_429_as_a_rate_limit_with_its_delay(clock: Clock) -> None:
    with limited(clock, requests_per_min=1) as server:
        client = openai.OpenAI(api_key="sk-test", base_url=server.url, max_retries=0)
        try:
            client.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": "hi"}])
            clock.now_s += 12.25
            with pytest.raises(openai.RateLimitError) as raised:
                client.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": "hi"}])
        finally:
            client.close()
        error = classify(raised.value)
        assert isinstance(error, TransientError)
        assert error.error_class == "RateLimited"
        assert error.retry_after_ms == 47_750
