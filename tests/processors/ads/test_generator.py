"""The generator against a fake OpenAI server: every path ends where it should."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from pydantic import SecretStr

from processors.ads.generator import DEFAULT_RATE_LIMIT_PAUSE_S, AdCopyGenerator, copy_violations, spent
from processors.ads.jobs import _EXAMPLE_JOB, AdCopySet, AdJob
from processors.ads.platforms import Platform, limits_for
from processors.ads.schema import longest_answer_chars, max_output_tokens, response_format
from processors.errors import JobError, PermanentError, TransientError
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.processors.ads.conftest import API_KEY, TIMEOUT_S, make_job

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


@pytest.mark.parametrize(("platform", "variants"), [(Platform.GOOGLE_SEARCH, 3), (Platform.META_FEED, 5)])
async def test_the_request_carries_the_jobs_own_schema_and_a_token_cap(
    generator: AdCopyGenerator, fake_openai: FakeOpenAI, platform: Platform, variants: int
) -> None:
    job = make_job(platform=platform, variants=variants)
    await generator.generate(job)
    [request] = fake_openai.requests
    sent = request.body["response_format"]["json_schema"]
    assert sent == response_format(job)
    assert sent["schema"]["properties"]["variants"]["minItems"] == variants
    assert sent["schema"]["properties"]["variants"]["maxItems"] == variants
    # The output is bounded: at least one token per character of the longest allowed answer.
    assert request.body["max_completion_tokens"] == max_output_tokens(job)
    assert request.body["max_completion_tokens"] >= longest_answer_chars(job)
    assert "max_tokens" not in request.body


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
        (["server_error"], TransientError, "ServerError", None),
        (["refusal"], PermanentError, "Refusal", None),
        (["length"], PermanentError, "LengthLimit", None),
        (["bad_request"], PermanentError, "BadRequest", None),
        (["unauthorized"], PermanentError, "AuthenticationFailed", None),
        (["not_found"], PermanentError, "ModelNotFound", None),
        # A failure in the repair call is classified the same way.
        (["over_limit", "server_error"], TransientError, "ServerError", None),
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
    # Two calls with one SDK retry each, and as long again for waiting on rate limits.
    assert generator.per_call_s == 2 * 2.0 + 120.0
    assert generator.max_duration_s == 3 * (2 * 2.0 + 120.0)


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


@pytest.mark.parametrize("mode", ["shortest", "longest"])
@pytest.mark.parametrize("platform", list(Platform))
async def test_answers_at_the_schemas_extremes_pass_on_the_first_call(
    generator: AdCopyGenerator, fake_openai: FakeOpenAI, platform: Platform, mode: str
) -> None:
    job = AdJob.model_validate({**_EXAMPLE_JOB, "platform": platform})
    fake_openai.default = mode
    generated = await generator.generate(job)
    assert fake_openai.request_count == 1
    assert generated.model_calls == 1
    assert len(generated.variants) == job.variants
    limits = limits_for(platform)
    for variant in generated.variants:
        if mode == "longest":
            assert len(variant.headline) == limits.headline_chars
            assert len(variant.body) == limits.body_chars
            # A call-to-action wherever the platform has buttons, its longest label.
            expected = max(limits.call_to_actions, key=len) if limits.call_to_actions else None
            assert variant.call_to_action == expected
        else:
            assert (len(variant.headline), len(variant.body)) == (1, 1)
            assert (variant.call_to_action is None) == (not limits.call_to_actions)


class RecordingBudget:
    """A budget that lets every call start, and records what it was told."""

    def __init__(self, *, acquire_delay_s: float = 0.0) -> None:
        self.acquired: list[tuple[int, int]] = []
        self.settled: list[tuple[int, int]] = []
        self.paused: list[float] = []
        self.acquire_delay_s = acquire_delay_s

    async def acquire(self, *, prompt_chars: int, max_output_tokens: int) -> RecordingBudget:
        if self.acquire_delay_s:
            await asyncio.sleep(self.acquire_delay_s)
        self.acquired.append((prompt_chars, max_output_tokens))
        return self

    def settle(self, *, input_tokens: int, output_tokens: int) -> None:
        self.settled.append((input_tokens, output_tokens))

    def pause(self, retry_after_s: float) -> None:
        self.paused.append(retry_after_s)


def budgeted(fake_openai: FakeOpenAI, budget: RecordingBudget, **options: float) -> AdCopyGenerator:
    return AdCopyGenerator(
        "gpt-4o-mini", SecretStr(API_KEY), fake_openai.url, timeout_s=TIMEOUT_S, budget=budget, **options
    )


async def test_each_call_takes_budget_first_and_settles_its_usage(fake_openai: FakeOpenAI) -> None:
    budget = RecordingBudget()
    generator = budgeted(fake_openai, budget)
    job = make_job()
    try:
        fake_openai.script("over_limit", "good")
        generated = await generator.generate(job)
    finally:
        await generator.aclose()
    first, repair = fake_openai.requests
    schema_chars = len(json.dumps(response_format(job)))
    assert budget.acquired == [
        (sum(len(m["content"]) for m in first.messages) + schema_chars, max_output_tokens(job)),
        (sum(len(m["content"]) for m in repair.messages) + schema_chars, max_output_tokens(job)),
    ]
    assert sum(used[0] for used in budget.settled) == generated.token_usage["input_tokens"] == 240
    assert sum(used[1] for used in budget.settled) == generated.token_usage["output_tokens"]
    assert budget.paused == []


@pytest.mark.parametrize(
    ("refusal", "pause_s"),
    [
        (Behaviour("rate_limited", retry_after="0.3"), 0.3),
        (Behaviour("rate_limited", retry_after=None, headers={"retry-after-ms": "250"}), 0.25),
        # No retry-after: a default pause.
        (Behaviour("rate_limited", retry_after=None), DEFAULT_RATE_LIMIT_PAUSE_S),
    ],
)
async def test_a_rate_limit_pauses_and_calls_again_without_failing_the_job(
    fake_openai: FakeOpenAI, refusal: Behaviour, pause_s: float
) -> None:
    budget = RecordingBudget()
    generator = budgeted(fake_openai, budget)
    try:
        fake_openai.script(refusal, "good")
        generated = await generator.generate(make_job())
    finally:
        await generator.aclose()
    assert fake_openai.request_count == 2
    assert generated.model_calls == 1
    assert generated.rate_limited_calls == 1
    assert budget.paused == [pytest.approx(pause_s)]
    assert generated.elapsed_ms >= pause_s * 1000
    # The refused call used nothing; the answered one its usage.
    assert budget.settled[0] == (0, 0)
    assert len(budget.acquired) == 2


async def test_a_rate_limited_repair_call_is_made_again(fake_openai: FakeOpenAI) -> None:
    budget = RecordingBudget()
    generator = budgeted(fake_openai, budget)
    try:
        fake_openai.script("over_limit", Behaviour("rate_limited", retry_after="0.1"), "good")
        generated = await generator.generate(make_job())
    finally:
        await generator.aclose()
    assert (generated.model_calls, generated.rate_limited_calls) == (2, 1)
    assert fake_openai.request_count == 3


async def test_a_rate_limit_longer_than_the_wait_allowed_goes_to_the_retry_topic(
    fake_openai: FakeOpenAI,
) -> None:
    budget = RecordingBudget()
    generator = budgeted(fake_openai, budget, max_wait_s=0.5)
    try:
        fake_openai.script(Behaviour("rate_limited", retry_after="2"), "good")
        started_s = time.monotonic()
        with pytest.raises(TransientError) as caught:
            await generator.generate(make_job())
    finally:
        await generator.aclose()
    assert time.monotonic() - started_s < 1.0, "it does not wait for a pause it cannot afford"
    assert caught.value.error_class == "RateLimited"
    assert caught.value.retry_after_ms == 2_000
    assert budget.paused == [2.0], "the process's other calls still hold back"
    assert fake_openai.request_count == 1
    assert spent(caught.value) == ({"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}, 0)


async def test_waiting_for_the_budget_is_bounded(fake_openai: FakeOpenAI) -> None:
    generator = budgeted(fake_openai, RecordingBudget(acquire_delay_s=30), max_wait_s=0.3)
    try:
        started_s = time.monotonic()
        with pytest.raises(TransientError) as caught:
            await generator.generate(make_job())
    finally:
        await generator.aclose()
    assert time.monotonic() - started_s < 2.0
    assert caught.value.error_class == "RateLimited"
    assert fake_openai.request_count == 0


def test_max_duration_covers_every_call_and_the_wait() -> None:
    generator = AdCopyGenerator("gpt-4o-mini", None, "http://127.0.0.1:1/v1", timeout_s=60.0, max_wait_s=45.0)
    assert generator.max_duration_s == 2 * 60.0 + 45.0
    default = AdCopyGenerator("gpt-4o-mini", None, "http://127.0.0.1:1/v1", timeout_s=60.0)
    assert default.max_duration_s == 3 * 60.0


@pytest.mark.parametrize(
    ("script", "error_class", "model_calls", "input_tokens"),
    [
        (["over_limit", "over_limit"], "OutOfBounds", 2, 240),
        (["bad_schema", "bad_schema"], "SchemaViolation", 2, 240),
        (["refusal"], "Refusal", 1, 120),
        (["length"], "LengthLimit", 1, 120),
        (["over_limit", "server_error"], "ServerError", 1, 120),
        (["over_limit", "length"], "LengthLimit", 2, 240),
    ],
)
async def test_a_failed_generation_says_what_it_spent(
    generator: AdCopyGenerator,
    fake_openai: FakeOpenAI,
    script: list[str],
    error_class: str,
    model_calls: int,
    input_tokens: int,
) -> None:
    fake_openai.script(*script)
    with pytest.raises(JobError) as caught:
        await generator.generate(make_job())
    assert caught.value.error_class == error_class
    usage, calls = spent(caught.value)
    assert calls == model_calls
    assert usage["input_tokens"] == input_tokens
    assert usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_a_failure_before_any_answer_spent_nothing(
    generator: AdCopyGenerator, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("server_error")
    with pytest.raises(TransientError) as caught:
        await generator.generate(make_job())
    assert not hasattr(caught.value, "model_calls")
    assert spent(caught.value)[1] == 0
