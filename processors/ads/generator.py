"""Writing ad copy with an OpenAI chat model through LangChain's structured output.

One job costs one model call, or two when the first answer breaks the platform's
limits or the schema: the second call shows the model its answer and the list of
problems. A second bad answer fails the job for good.

LangChain and the OpenAI SDK load when the first generator is built, not at import:
the store, the service and a worker with no model configured never need them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, cast

from pydantic import SecretStr, ValidationError

from processors.ads.jobs import AdCopySet, AdJob, AdVariant
from processors.ads.platforms import PlatformLimits, limits_for
from processors.ads.prompt import AdPrompt
from processors.decoding import describe_validation_error
from processors.errors import JobError, PermanentError
from processors.observe import ModelObserver, timed_call

if TYPE_CHECKING:
    from langchain_core.language_models import LanguageModelInput
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.runnables import Runnable

OPENAI_BASE_URL = "https://api.openai.com/v1"
MAX_MODEL_CALLS = 2
# The openai SDK honours a server's Retry-After up to this long between its own retries.
SDK_MAX_RETRY_SLEEP_S = 120.0
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


@dataclass
class _Answer:
    copy: AdCopySet | None
    text: str | None
    problems: list[str]
    error_class: str | None
    model: str | None
    usage: TokenUsage


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
    ) -> None:
        """`observer` is told how long each model call took and the tokens it used."""
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        import openai
        from langchain_openai import ChatOpenAI

        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._prompt = prompt or AdPrompt()
        self._observer = observer
        # Our own client, so that it is closed with the generator and never outlives its event loop.
        self._http_client = openai.DefaultAsyncHttpxClient(timeout=timeout_s)
        chat = ChatOpenAI(
            model=model,
            api_key=api_key or _NO_KEY,
            base_url=base_url or OPENAI_BASE_URL,
            timeout=timeout_s,
            max_retries=max_retries,
            http_async_client=self._http_client,
        )
        # json_schema (OpenAI Structured Outputs) is the default method; include_raw keeps
        # the AIMessage, which carries token usage, the finish reason and any refusal.
        self._chain = cast(
            "Runnable[LanguageModelInput, dict[str, Any]]",
            chat.with_structured_output(AdCopySet, method="json_schema", include_raw=True),
        )

    @property
    def max_duration_s(self) -> float:
        """Longest time one `generate` can take: every call and SDK retry timing out."""
        per_call_s = (self.max_retries + 1) * self.timeout_s + self.max_retries * SDK_MAX_RETRY_SLEEP_S
        return MAX_MODEL_CALLS * per_call_s

    async def aclose(self) -> None:
        await self._http_client.aclose()

    async def generate(self, job: AdJob) -> GeneratedCopy:
        """Copy for `job`, within its platform's limits.

        Raises `TransientError` (rate limit, timeout, 5xx, connection) or
        `PermanentError` (`Refusal`, `LengthLimit`, `OutOfBounds`, `SchemaViolation`,
        or a rejected request: auth, bad request, unknown model).
        """
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        started_s = time.monotonic()
        limits = limits_for(job.platform)
        rendered = self._prompt.render(job)
        messages: list[BaseMessage] = [SystemMessage(rendered.system), HumanMessage(rendered.user)]
        answer = await self._ask(messages, job, limits)
        usage = answer.usage
        calls = 1
        if answer.problems:
            if answer.text:
                messages.append(AIMessage(answer.text))
            messages.append(HumanMessage(self._prompt.repair(job, answer.problems)))
            answer = await self._ask(messages, job, limits)
            usage = _add(usage, answer.usage)
            calls += 1
        if answer.problems or answer.copy is None:
            first = (answer.problems or ["no copy"])[0][:200]
            raise PermanentError(
                f"the answer still breaks the rules after a repair: {first}",
                error_class=answer.error_class,
            )
        return GeneratedCopy(
            variants=answer.copy.variants,
            model=answer.model or self.model,
            token_usage=usage,
            model_calls=calls,
            elapsed_ms=int((time.monotonic() - started_s) * 1000),
        )

    async def _ask(self, messages: list[BaseMessage], job: AdJob, limits: PlatformLimits) -> _Answer:
        with timed_call(self._observer, "chat"):
            try:
                result = await self._chain.ainvoke(messages)
            except ValidationError as error:
                # The SDK parses the content itself; its error is all we get of the answer.
                return _Answer(
                    None, None, [describe_validation_error(error)], "SchemaViolation", None, _usage(None)
                )
            except Exception as error:
                classified = _classify(error)
                if classified is None:
                    raise
                raise classified from error
        raw = cast("AIMessage", result["raw"])
        if self._observer is not None:
            # The configured name, not the answer's dated one: one label value per deployment.
            usage = _usage(raw)
            self._observer.tokens_used(self.model, usage["input_tokens"], usage["output_tokens"])
        if raw.additional_kwargs.get("refusal") or isinstance(result.get("parsing_error"), Exception):
            # `parsing_error` is a refusal, or an answer with neither content nor refusal.
            _raise_refusal(raw, result.get("parsing_error"))
        text = raw.content if isinstance(raw.content, str) else None
        model = raw.response_metadata.get("model_name")
        parsed = result.get("parsed")
        if not isinstance(parsed, AdCopySet):
            problems = ["the answer is not JSON of the response schema"]
            return _Answer(None, text, problems, "SchemaViolation", model, _usage(raw))
        copy = _tidy(parsed)
        problems = copy_violations(copy, limits, job.variants)
        return _Answer(copy, text, problems, "OutOfBounds" if problems else None, model, _usage(raw))


def spent(error: BaseException) -> tuple[TokenUsage, int]:
    """What a failed `generate` had already paid for: its token usage and model calls.

    SEAM: `generate` sets `error.token_usage` and `error.model_calls` on every `JobError`
    it raises after at least one call answered; zero usage otherwise.
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
