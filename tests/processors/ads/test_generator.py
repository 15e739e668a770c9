"""The generator against a fake OpenAI server: every path ends where it should."""

from __future__ import annotations

import json
import socket
import time

import pytest
from pydantic import SecretStr

from processors.ads.generator import AdCopyGenerator, copy_violations
from processors.ads.jobs import AdCopySet
from processors.ads.platforms import Platform, limits_for
from processors.errors import JobError, PermanentError, TransientError
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.processors.ads.conftest import API_KEY, make_job

MODEL_DELAY_S = 0.05


def assert_secret_free(error: JobError) -> None:
    assert API_KEY not in error.message
    assert "sk-" not in error.message


@pytest.mark.parametrize("platform", list(Platform))
async def test_good_answer_gives_copy_within_limits_in_one_call(
    generator: AdCopyGenerator, fake_openai: FakeOpenAI, platform: Platform
) -> None:
    job = make_job(platform=platform, variants=2)
    fake_openai.script(Behaviour("good", delay_s=MODEL_DELAY_S))
    started_s = time.monotonic()
    generated = await generator.generate(job)
    wall_ms = int((time.monotonic() - started_s) * 1000)
    assert len(generated.variants) == 2
    assert copy_violations(AdCopySet(variants=generated.variants), limits_for(platform), 2) == []
    assert generated.model_calls == 1
    assert fake_openai.request_count == 1
    assert generated.model == fake_openai.model
    usage = generated.token_usage
    assert usage["input_tokens"] == 120
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    # The time spent includes the model's answer, in milliseconds.
    assert MODEL_DELAY_S * 1000 <= generated.elapsed_ms <= wall_ms


async def test_request_uses_structured_outputs_with_the_schema(
    generator: AdCopyGenerator, fake_openai: FakeOpenAI
) -> None:
    await generator.generate(make_job())
    [request] = fake_openai.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert float(request.headers["x-stainless-read-timeout"]) == 5.0
    assert request.body["model"] == "gpt-4o-mini"
    response_format = request.body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "AdCopySet"
    assert response_format["json_schema"]["strict"] is True
    assert [message["role"] for message in request.messages] == ["system", "user"]


async def test_over_limit_then_good_is_repaired_with_a_second_call(
    generator: AdCopyGenerator, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("over_limit", "good")
    generated = await generator.generate(make_job())
    assert generated.model_calls == 2
    assert fake_openai.request_count == 2
    assert generated.token_usage["input_tokens"] == 240
    repair = fake_openai.requests[1].messages
    assert [message["role"] for message in repair] == ["system", "user", "assistant", "user"]
    # The model sees its own previous answer, and what is wrong with it.
    previous = json.loads(repair[2]["content"])
    assert len(previous["variants"][0]["headline"]) == 35
    assert "variant 1: headline (headline) is 35 characters, the limit is 30" in repair[3]["content"]


async def test_over_limit_twice_is_permanent_out_of_bounds(
    generator: AdCopyGenerator, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("over_limit", "over_limit", "good")
    with pytest.raises(PermanentError) as caught:
        await generator.generate(make_job())
    assert caught.value.error_class == "OutOfBounds"
    assert fake_openai.request_count == 2


async def test_wrong_variant_count_is_repaired(generator: AdCopyGenerator, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Behaviour("good", variants=2), "good")
    generated = await generator.generate(make_job(variants=3))
    assert len(generated.variants) == 3
    assert "there must be exactly 3 variants, there are 2" in fake_openai.requests[1].messages[-1]["content"]


async def test_schema_violation_then_good_is_repaired(
    generator: AdCopyGenerator, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("bad_schema", "good")
    generated = await generator.generate(make_job())
    assert generated.model_calls == 2
    assert "variants: Field required" in fake_openai.requests[1].messages[-1]["content"]


async def test_schema_violation_twice_is_permanent(
    generator: AdCopyGenerator, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("bad_schema", "bad_schema")
    with pytest.raises(PermanentError) as caught:
        await generator.generate(make_job())
    assert caught.value.error_class == "SchemaViolation"
    assert fake_openai.request_count == 2


@pytest.mark.parametrize(
    ("script", "error_type", "error_class", "retry_after_ms"),
    [
        (["rate_limited"], TransientError, "RateLimited", 2_000),
        (
            [Behaviour("rate_limited", retry_after=None, headers={"retry-after-ms": "1500"})],
            TransientError,
            "RateLimited",
            1_500,
        ),
        (["server_error"], TransientError, "ServerError", None),
        (["refusal"], PermanentError, "Refusal", None),
        (["length"], PermanentError, "LengthLimit", None),
        (["bad_request"], PermanentError, "BadRequest", None),
        (["unauthorized"], PermanentError, "AuthenticationFailed", None),
        (["not_found"], PermanentError, "ModelNotFound", None),
        # A failure in the repair call is classified the same way.
        (["over_limit", "rate_limited"], TransientError, "RateLimited", 2_000),
        (["over_limit", "refusal"], PermanentError, "Refusal", None),
    ],
)
async def test_failures_are_classified(
    generator: AdCopyGenerator,
    fake_openai: FakeOpenAI,
    script: list[Behaviour | str],
    error_type: type[JobError],
    error_class: str,
    retry_after_ms: int | None,
) -> None:
    fake_openai.script(*script)
    with pytest.raises(error_type) as caught:
        await generator.generate(make_job())
    assert caught.value.error_class == error_class
    assert fake_openai.request_count == len(script)
    if isinstance(caught.value, TransientError):
        assert caught.value.retry_after_ms == retry_after_ms
    assert_secret_free(caught.value)


async def test_slow_answer_is_a_transient_timeout(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Behaviour("good", delay_s=30))
    generator = AdCopyGenerator("gpt-4o-mini", SecretStr(API_KEY), fake_openai.url, timeout_s=0.3)
    try:
        with pytest.raises(TransientError) as caught:
            await generator.generate(make_job())
    finally:
        await generator.aclose()
    assert caught.value.error_class == "Timeout"
    assert fake_openai.request_count == 1


async def test_unreachable_server_is_transient() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    generator = AdCopyGenerator("gpt-4o-mini", None, f"http://127.0.0.1:{port}/v1", timeout_s=2.0)
    try:
        with pytest.raises(TransientError) as caught:
            await generator.generate(make_job())
    finally:
        await generator.aclose()
    assert caught.value.error_class == "ConnectionFailed"


async def test_max_retries_are_left_to_the_sdk(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Behaviour("rate_limited", retry_after="0"), "good")
    generator = AdCopyGenerator(
        "gpt-4o-mini", SecretStr(API_KEY), fake_openai.url, timeout_s=2.0, max_retries=1
    )
    try:
        generated = await generator.generate(make_job())
    finally:
        await generator.aclose()
    assert generated.model_calls == 1
    assert fake_openai.request_count == 2
    assert generator.max_duration_s == 2 * (2 * 2.0 + 120.0)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        AdCopyGenerator("gpt-4o-mini", None, None, timeout_s=0)


class ModelCalls:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.tokens: list[tuple[str, int, int]] = []

    def call_finished(self, operation: str, duration_s: float, outcome: str) -> None:
        self.calls.append((operation, outcome))

    def tokens_used(self, model: str, input_tokens: int, output_tokens: int) -> None:
        self.tokens.append((model, input_tokens, output_tokens))


async def test_the_observer_hears_each_model_call_and_its_tokens(fake_openai: FakeOpenAI) -> None:
    observer = ModelCalls()
    generator = AdCopyGenerator(
        "gpt-4o-mini", SecretStr(API_KEY), fake_openai.url, timeout_s=5.0, observer=observer
    )
    try:
        fake_openai.script("over_limit", "good")
        generated = await generator.generate(make_job())
    finally:
        await generator.aclose()
    assert observer.calls == [("chat", "ok"), ("chat", "ok")]
    assert sum(used[1] for used in observer.tokens) == generated.token_usage["input_tokens"]
    assert sum(used[2] for used in observer.tokens) == generated.token_usage["output_tokens"]
    assert {used[0] for used in observer.tokens} == {"gpt-4o-mini"}
