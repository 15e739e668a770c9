"""Writing ad copy with an OpenAI chat model through LangChain's structured output.

The model answers in a JSON schema built for the job (`processors.ads.schema`): strict
Structured Outputs enforce the variant count, the call-to-action labels and the length
limits while decoding. What the schema cannot carry is checked after the answer: one
job costs one model call, or two when the first answer still breaks the platform's
limits; the second call shows the model its answer and the list of problems. A second
bad answer fails the job for good.

Each call first takes room in the model's rate budget (`processors.ads.budget`). A 429
rate limit pauses this process's calls for the provider's `retry-after` and the call is
made again here, within `max_wait_s`: a rate limit alone costs the job no attempt.

LangChain and the OpenAI SDK load when the first generator is built, not at import:
the store, the service and a worker with no model configured never need them.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, cast

from pydantic import SecretStr, ValidationError

from processors.ads.budget import CallBudget, Ticket, Unlimited
from processors.ads.jobs import AdCopySet, AdJob, AdVariant
from processors.ads.platforms import PlatformLimits, limits_for
from processors.ads.prompt import AdPrompt
from processors.ads.schema import max_output_tokens, response_format
from processors.decoding import describe_validation_error
from processors.errors import JobError, PermanentError, TransientError
from processors.observe import ModelObserver, timed_call

if TYPE_CHECKING:
    from langchain_core.language_models import LanguageModelInput
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.runnables import Runnable
    from langchain_openai import ChatOpenAI

OPENAI_BASE_URL = "https://api.openai.com/v1"
MAX_MODEL_CALLS = 2
# The openai SDK honours a server's Retry-After up to this long between its own retries.
SDK_MAX_RETRY_SLEEP_S = 120.0
# A 429 without retry-after, or with a tiny one, pauses this long before the call is made again.
DEFAULT_RATE_LIMIT_PAUSE_S = 1.0
MIN_RATE_LIMIT_PAUSE_S = 0.1
# OpenAI-compatible local servers ignore the key, but the client refuses to start without one.
_NO_KEY = SecretStr("no-key")


class TokenUsage(TypedDict):
    input_tokens: int
    output_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class GeneratedCopy:
    """Copy that fits the platform, and what it cost."""

    variants: list[AdVariant]
    model: str
    token_usage: TokenUsage
    model_calls: int
    elapsed_ms: int
    # Calls the provider refused with 429 and that were made again in-process (not paid).
    rate_limited_calls: int = 0


@dataclass
class _Answer:
    copy: AdCopySet | None
    text: str | None
    problems: list[str]
    error_class: str | None
    model: str | None


@dataclass
class _Spend:
    """What one `generate` has paid for so far, and how often it was rate limited."""

    usage: TokenUsage = field(default_factory=lambda: _usage(None))
    calls: int = 0
    rate_limited: int = 0

    def answered(self, usage: TokenUsage) -> None:
        self.usage = _add(self.usage, usage)
        self.calls += 1


@dataclass(frozen=True)
class _Call:
    """One job's request settings: its chain (schema and token cap) and its size."""

    chain: Runnable[LanguageModelInput, dict[str, Any]]
    schema_chars: int
    max_output_tokens: int
    deadline_s: float


def call_worst_case_s(timeout_s: float, max_retries: int) -> float:
    """Longest time one model call can take, with every SDK retry timing out."""
    return (max_retries + 1) * timeout_s + max_retries * SDK_MAX_RETRY_SLEEP_S


class AdCopyGenerator:
    """Writes ad copy for jobs. Call `aclose()` when done: it owns an HTTP connection pool."""

    def __init__(
        self,
        model: str,
        api_key: SecretStr | None,
        base_url: str | None,
        timeout_s: float,
        max_retries: int = 0,
        *,
        prompt: AdPrompt | None = None,
        observer: ModelObserver | None = None,
        budget: CallBudget | None = None,
        max_wait_s: float | None = None,
    ) -> None:
        """`observer` is told how long each model call took and the tokens it used.

        `budget` paces the calls (None: no limit). `max_wait_s` bounds the time one
        `generate` spends waiting for the budget and for 429 pauses; by default one
        call's worst case.
        """
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if max_wait_s is not None and max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        import openai
        from langchain_openai import ChatOpenAI

        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_wait_s = self.per_call_s if max_wait_s is None else max_wait_s
        self._prompt = prompt or AdPrompt()
        self._observer = observer
        self._budget: CallBudget = budget or Unlimited()
        # Our own client, so that it is closed with the generator and never outlives its event loop.
        self._http_client = openai.DefaultAsyncHttpxClient(timeout=timeout_s)
        self._chat: ChatOpenAI = ChatOpenAI(
            model=model,
            api_key=api_key or _NO_KEY,
            base_url=base_url or OPENAI_BASE_URL,
            timeout=timeout_s,
            max_retries=max_retries,
            http_async_client=self._http_client,
        )

    @property
    def per_call_s(self) -> float:
        """Longest time one model call can take, with every SDK retry timing out."""
        return call_worst_case_s(self.timeout_s, self.max_retries)

    @property
    def max_duration_s(self) -> float:
        """Longest time one `generate` can take: every call timing out, and every wait."""
        return MAX_MODEL_CALLS * self.per_call_s + self.max_wait_s

    async def aclose(self) -> None:
        await self._http_client.aclose()

    async def generate(self, job: AdJob) -> GeneratedCopy:
        """Copy for `job`, within its platform's limits.

        Raises `TransientError` (rate limit past `max_wait_s`, timeout, 5xx, connection)
        or `PermanentError` (`Refusal`, `LengthLimit`, `OutOfBounds`, `SchemaViolation`,
        or a rejected request: auth, bad request, unknown model). Once a call has
        answered, the error carries `token_usage` and `model_calls` (see `spent`).
        """
        started_s = time.monotonic()
        spend = _Spend()
        try:
            return await self._generate(job, started_s, spend)
        except JobError as error:
            if spend.calls:
                # Attributes, not constructor arguments: every JobError subclass can carry them.
                setattr(error, "token_usage", spend.usage)  # noqa: B010
                setattr(error, "model_calls", spend.calls)  # noqa: B010
            raise

    async def _generate(self, job: AdJob, started_s: float, spend: _Spend) -> GeneratedCopy:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        limits = limits_for(job.platform)
        rendered = self._prompt.render(job)
        schema = response_format(job)
        max_tokens = max_output_tokens(job)
        # A dict schema: LangChain answers with a dict, and validation stays here, so that
        # an answer that fails it still has its raw message and usage.
        chain = cast(
            "Runnable[LanguageModelInput, dict[str, Any]]",
            self._chat.with_structured_output(
                schema, method="json_schema", include_raw=True, max_tokens=max_tokens
            ),
        )
        call = _Call(chain, len(json.dumps(schema)), max_tokens, started_s + self.max_duration_s)
        messages: list[BaseMessage] = [SystemMessage(rendered.system), HumanMessage(rendered.user)]
        answer = await self._paced(call, messages, job, limits, spend)
        if answer.problems:
            if answer.text:
                messages.append(AIMessage(answer.text))
            messages.append(HumanMessage(self._prompt.repair(job, answer.problems)))
            answer = await self._paced(call, messages, job, limits, spend)
        if answer.problems or answer.copy is None:
            first = (answer.problems or ["no copy"])[0][:200]
            raise PermanentError(
                f"the answer still breaks the rules after a repair: {first}",
                error_class=answer.error_class,
            )
        return GeneratedCopy(
            variants=answer.copy.variants,
            model=answer.model or self.model,
            token_usage=spend.usage,
            model_calls=spend.calls,
            elapsed_ms=int((time.monotonic() - started_s) * 1000),
            rate_limited_calls=spend.rate_limited,
        )

    async def _paced(
        self, call: _Call, messages: list[BaseMessage], job: AdJob, limits: PlatformLimits, spend: _Spend
    ) -> _Answer:
        """One answered call: waits for the budget, and makes the call again after a 429."""
        prompt_chars = sum(len(str(message.content)) for message in messages) + call.schema_chars
        while True:
            # Keep time for this call and the ones after it: `max_duration_s` must hold.
            reserve_s = (MAX_MODEL_CALLS - spend.calls) * self.per_call_s
            room_s = call.deadline_s - time.monotonic() - reserve_s
            ticket = await self._acquire(prompt_chars, call.max_output_tokens, room_s)
            try:
                return await self._ask(call, ticket, messages, job, limits, spend)
            except TransientError as error:
                if error.error_class != "RateLimited":
                    raise
                # Refused before any work: nothing was used.
                ticket.settle(input_tokens=0, output_tokens=0)
                spend.rate_limited += 1
                pause_s = (
                    DEFAULT_RATE_LIMIT_PAUSE_S
                    if error.retry_after_ms is None
                    else max(MIN_RATE_LIMIT_PAUSE_S, error.retry_after_ms / 1000)
                )
                self._budget.pause(pause_s)
                if time.monotonic() + pause_s > call.deadline_s - reserve_s:
                    raise  # no time left to wait: the retry topic waits instead
                await asyncio.sleep(pause_s)

    async def _acquire(self, prompt_chars: int, max_tokens: int, room_s: float) -> Ticket:
        if room_s > 0:
            try:
                async with asyncio.timeout(room_s):
                    return await self._budget.acquire(prompt_chars=prompt_chars, max_output_tokens=max_tokens)
            except TimeoutError:
                pass
        raise TransientError("the model's rate budget had no room in time", error_class="RateLimited")

    async def _ask(
        self,
        call: _Call,
        ticket: Ticket,
        messages: list[BaseMessage],
        job: AdJob,
        limits: PlatformLimits,
        spend: _Spend,
    ) -> _Answer:
        with timed_call(self._observer, "chat"):
            try:
                result = await call.chain.ainvoke(messages)
            except Exception as error:
                classified = _classify(error)
                if classified is None:
                    raise
                # A cut-off or filtered answer was still generated, and paid for.
                completion_usage = _completion_usage(error)
                if completion_usage is not None:
                    self._answered(ticket, spend, completion_usage)
                raise classified from error
        raw = cast("AIMessage", result["raw"])
        self._answered(ticket, spend, _usage(raw))
        if raw.additional_kwargs.get("refusal") or isinstance(result.get("parsing_error"), Exception):
            # `parsing_error` is a refusal, a filtered answer, or content that is not JSON.
            _raise_refusal(raw, result.get("parsing_error"))
        text = raw.content if isinstance(raw.content, str) else None
        model = raw.response_metadata.get("model_name")
        if text is None:
            return _Answer(None, None, ["the answer has no text"], "SchemaViolation", model)
        try:
            parsed = AdCopySet.model_validate_json(text)
        except ValidationError as error:
            return _Answer(None, text, [describe_validation_error(error)], "SchemaViolation", model)
        copy = _tidy(parsed)
        problems = copy_violations(copy, limits, job.variants)
        return _Answer(copy, text, problems, "OutOfBounds" if problems else None, model)

    def _answered(self, ticket: Ticket, spend: _Spend, usage: TokenUsage) -> None:
        ticket.settle(input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"])
        spend.answered(usage)
        if self._observer is not None:
            # The configured name, not the answer's dated one: one label value per deployment.
            self._observer.tokens_used(self.model, usage["input_tokens"], usage["output_tokens"])


def spent(error: BaseException) -> tuple[TokenUsage, int]:
    """What a failed `generate` had already paid for: its token usage and model calls.

    `generate` sets `error.token_usage` and `error.model_calls` on every `JobError` it
    raises after at least one call answered; zero usage otherwise.
    """
    usage = getattr(error, "token_usage", None)
    calls = getattr(error, "model_calls", 0)
    if usage is None:
        usage = TokenUsage(input_tokens=0, output_tokens=0, total_tokens=0)
    return usage, int(calls)


def copy_violations(copy: AdCopySet, limits: PlatformLimits, variants: int) -> list[str]:
    """Every way `copy` breaks the platform's limits or the requested count; empty if none."""
    problems = []
    if len(copy.variants) != variants:
        problems.append(f"there must be exactly {variants} variants, there are {len(copy.variants)}")
    for number, variant in enumerate(copy.variants, start=1):
        for problem in limits.violations(variant.headline, variant.body, variant.call_to_action):
            problems.append(f"variant {number}: {problem}")
    return problems


def _tidy(copy: AdCopySet) -> AdCopySet:
    # Stray whitespace would count against the limits and show in the ad.
    return AdCopySet(
        variants=[
            AdVariant(
                headline=variant.headline.strip(),
                body=variant.body.strip(),
                call_to_action=(variant.call_to_action or "").strip() or None,
            )
            for variant in copy.variants
        ]
    )


def _raise_refusal(raw: AIMessage, parsing_error: object) -> None:
    if raw.additional_kwargs.get("refusal"):
        raise PermanentError("the model refused the request", error_class="Refusal")
    if isinstance(parsing_error, BaseException):
        classified = _classify(parsing_error)
        if classified is not None:
            raise classified from parsing_error


def _classify(error: BaseException) -> JobError | None:
    # Imported here: the classifier needs the SDK's error classes, loaded by then.
    from processors.ads.provider_errors import classify

    return classify(error)


def _completion_usage(error: BaseException) -> TokenUsage | None:
    """The usage of the completion inside an SDK error (a cut-off or filtered answer)."""
    completion = getattr(error, "completion", None)
    usage = getattr(completion, "usage", None)
    if usage is None:
        return None
    return TokenUsage(
        input_tokens=int(usage.prompt_tokens),
        output_tokens=int(usage.completion_tokens),
        total_tokens=int(usage.total_tokens),
    )


def _usage(raw: AIMessage | None) -> TokenUsage:
    metadata = raw.usage_metadata if raw is not None else None
    if not metadata:
        return TokenUsage(input_tokens=0, output_tokens=0, total_tokens=0)
    return TokenUsage(
        input_tokens=metadata["input_tokens"],
        output_tokens=metadata["output_tokens"],
        total_tokens=metadata["total_tokens"],
    )


def _add(first: TokenUsage, second: TokenUsage) -> TokenUsage:
    return TokenUsage(
        input_tokens=first["input_tokens"] + second["input_tokens"],
        output_tokens=first["output_tokens"] + second["output_tokens"],
        total_tokens=first["total_tokens"] + second["total_tokens"],
    )
