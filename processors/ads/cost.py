"""What ad jobs cost: tokens and an estimated price per model, from the `ads` documents.

Pure arithmetic, no store and no Kafka: `ads cost` reads the documents and hands them here.
Prices are USD per million tokens, input (prompt) and output (completion) apart, as
OpenAI lists them; they come from `OPENAI_PRICES`, never from code. A model with no
price gets its tokens and no cost, not a guessed one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

SUCCEEDED = "succeeded"
FAILED = "failed"
DEAD_LETTERED = "dead-lettered"
TERMINAL = (SUCCEEDED, FAILED, DEAD_LETTERED)
# What `ads cost` projects from each document: nothing else is read.
FIELDS = ("status", "model", "model_calls", "token_usage")
PRICES_SHAPE = '{"MODEL": {"input_per_1m": USD, "output_per_1m": USD}}'
TOKENS_PER_PRICE_UNIT = 1_000_000
PER_JOBS = 1_000

# `gpt-4o-mini-2024-07-18` is a snapshot of `gpt-4o-mini`.
_SNAPSHOT_DATE = re.compile(r"-\d{4}-\d{2}-\d{2}$")


class Price(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_1m: float = Field(ge=0, allow_inf_nan=False)
    output_per_1m: float = Field(ge=0, allow_inf_nan=False)

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_1m + output_tokens * self.output_per_1m) / TOKENS_PER_PRICE_UNIT


Prices = dict[str, Price]
_PRICES: TypeAdapter[Prices] = TypeAdapter(Prices)


def parse_prices(value: object) -> Prices:
    """`OPENAI_PRICES` as JSON text (or already a mapping); ValueError naming what is wrong."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"not JSON ({error.msg}); expected {PRICES_SHAPE}") from None
    try:
        return _PRICES.validate_python(value)
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(part) for part in item['loc']) or 'the value'}: {item['msg']}"
            for item in error.errors(include_input=False, include_url=False)
        ]
        raise ValueError(f"{'; '.join(problems)}; expected {PRICES_SHAPE}") from None


# The `OPENAI_PRICES` setting's type: JSON text in, validated prices out.
PricesSetting = Annotated[Prices, BeforeValidator(parse_prices)]


def price_for(model: str | None, prices: Mapping[str, Price]) -> tuple[str, Price] | None:
    """The entry that prices `model`: its own, else its base name's for a dated snapshot."""
    if model is None:
        return None
    for name in (model, _SNAPSHOT_DATE.sub("", model)):
        if name in prices:
            return name, prices[name]
    return None


@dataclass
class ModelCost:
    """One model's terminal jobs, calls and tokens; the cost when its price is known."""

    model: str | None
    jobs_by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TERMINAL, 0))
    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    priced_as: str | None = None
    price: Price | None = None

    @property
    def jobs(self) -> int:
        return sum(self.jobs_by_status.values())

    @property
    def succeeded(self) -> int:
        return self.jobs_by_status.get(SUCCEEDED, 0)

    @property
    def cost_usd(self) -> float | None:
        if self.price is None:
            return None
        return self.price.cost_usd(self.input_tokens, self.output_tokens)

    @property
    def per_1000_jobs_usd(self) -> float | None:
        return _per_1000(self.cost_usd, self.jobs)

    @property
    def per_1000_succeeded_usd(self) -> float | None:
        return _per_1000(self.cost_usd, self.succeeded)

    def add(self, document: Mapping[str, Any]) -> None:
        status = document.get("status")
        key = status if isinstance(status, str) and status else "unknown"
        self.jobs_by_status[key] = self.jobs_by_status.get(key, 0) + 1
        self.model_calls += _count(document.get("model_calls"))
        usage = document.get("token_usage")
        usage = usage if isinstance(usage, Mapping) else {}
        input_tokens = _count(usage.get("input_tokens"))
        output_tokens = _count(usage.get("output_tokens"))
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        total = usage.get("total_tokens")
        self.total_tokens += _count(total) if _is_count(total) else input_tokens + output_tokens

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "jobs": self.jobs,
            "jobs_by_status": dict(self.jobs_by_status),
            "model_calls": self.model_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "priced_as": self.priced_as,
            "price": self.price.model_dump() if self.price else None,
            "cost_usd": _rounded(self.cost_usd),
            "cost_per_1000_jobs_usd": _rounded(self.per_1000_jobs_usd),
            "cost_per_1000_succeeded_usd": _rounded(self.per_1000_succeeded_usd),
        }


@dataclass
class CostReport:
    """Every model's `ModelCost`, most jobs first, and their sum."""

    models: list[ModelCost]
    total: ModelCost

    @property
    def unpriced(self) -> list[ModelCost]:
        return [row for row in self.models if row.price is None and row.total_tokens > 0]

    @property
    def total_cost_usd(self) -> float | None:
        """The cost of the priced models (None when none is priced); see `unpriced`."""
        costs = [row.cost_usd for row in self.models if row.cost_usd is not None]
        return sum(costs) if costs else None

    @property
    def complete(self) -> bool:
        """Every model that used tokens has a price: the total cost covers them all."""
        return not self.unpriced

    @property
    def total_per_1000_jobs_usd(self) -> float | None:
        return _per_1000(self.total_cost_usd, self.total.jobs) if self.complete else None

    @property
    def total_per_1000_succeeded_usd(self) -> float | None:
        return _per_1000(self.total_cost_usd, self.total.succeeded) if self.complete else None

    def as_json(self) -> dict[str, Any]:
        total = self.total.as_json()
        del total["model"], total["priced_as"], total["price"]
        total.update(
            cost_usd=_rounded(self.total_cost_usd),
            cost_per_1000_jobs_usd=_rounded(self.total_per_1000_jobs_usd),
            cost_per_1000_succeeded_usd=_rounded(self.total_per_1000_succeeded_usd),
            complete=self.complete,
        )
        return {"models": [row.as_json() for row in self.models], "total": total}


def summarize(documents: Iterable[Mapping[str, Any]], prices: Mapping[str, Price]) -> CostReport:
    """Sum the documents per `model` (None: the job never reached a model) and price each."""
    rows: dict[str | None, ModelCost] = {}
    total = ModelCost(model=None)
    for document in documents:
        model = document.get("model")
        model = model if isinstance(model, str) and model else None
        row = rows.get(model)
        if row is None:
            row = rows[model] = ModelCost(model=model)
            priced = price_for(model, prices)
            if priced is not None:
                row.priced_as, row.price = priced
        row.add(document)
        total.add(document)
    ordered = sorted(rows.values(), key=lambda row: (-row.jobs, row.model is None, row.model or ""))
    return CostReport(models=ordered, total=total)


def _per_1000(cost_usd: float | None, jobs: int) -> float | None:
    if cost_usd is None or jobs == 0:
        return None
    return cost_usd / jobs * PER_JOBS


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _count(value: object) -> int:
    """A stored count; missing or malformed counts as 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return 0


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
