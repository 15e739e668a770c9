"""Cost arithmetic: tokens and jobs summed per model, priced only where a price is set."""

from __future__ import annotations

import pytest

from processors.ads.cost import Price, parse_prices, price_for, summarize
from streams.settings import OpenAISettings, SettingsError, load_settings

MINI = Price(input_per_1m=0.15, output_per_1m=0.60)
PRICES = {"gpt-4o-mini": MINI, "gpt-4o": Price(input_per_1m=2.5, output_per_1m=10.0)}


def ad(
    status: str, model: str | None, calls: int, input_tokens: int, output_tokens: int
) -> dict[str, object]:
    return {
        "status": status,
        "model": model,
        "model_calls": calls,
        "token_usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }


def test_jobs_calls_and_tokens_are_summed_per_model_and_priced() -> None:
    documents = [
        ad("succeeded", "gpt-4o-mini", 1, 1_000, 200),
        ad("succeeded", "gpt-4o-mini", 2, 2_000, 500),
        ad("failed", "gpt-4o-mini", 2, 1_500, 300),
        ad("dead-lettered", "gpt-4o-mini", 2, 1_500, 0),
        ad("succeeded", "gpt-4o", 1, 1_000, 1_000),
    ]
    report = summarize(documents, PRICES)
    mini, big = report.models
    assert mini.model == "gpt-4o-mini"
    assert mini.jobs_by_status == {"succeeded": 2, "failed": 1, "dead-lettered": 1}
    assert (mini.model_calls, mini.input_tokens, mini.output_tokens, mini.total_tokens) == (
        7,
        6_000,
        1_000,
        7_000,
    )
    # 6,000 in at $0.15/M + 1,000 out at $0.60/M
    assert mini.cost_usd == pytest.approx(0.0009 + 0.0006)
    assert mini.per_1000_jobs_usd == pytest.approx(0.0015 / 4 * 1000)
    assert mini.per_1000_succeeded_usd == pytest.approx(0.0015 / 2 * 1000)
    assert big.cost_usd == pytest.approx(0.0025 + 0.01)
    assert report.complete
    assert report.total.jobs == 5
    assert report.total.total_tokens == 9_000
    assert report.total_cost_usd == pytest.approx(0.0015 + 0.0125)
    assert report.total_per_1000_jobs_usd == pytest.approx(0.014 / 5 * 1000)
    assert report.total_per_1000_succeeded_usd == pytest.approx(0.014 / 3 * 1000)


def test_a_model_without_a_price_shows_tokens_and_no_cost() -> None:
    report = summarize(
        [ad("succeeded", "llama3.1", 1, 800, 100), ad("succeeded", "gpt-4o-mini", 1, 1_000_000, 0)], PRICES
    )
    llama = next(row for row in report.models if row.model == "llama3.1")
    assert (llama.input_tokens, llama.output_tokens) == (800, 100)
    assert llama.price is None
    assert llama.cost_usd is None
    assert llama.per_1000_jobs_usd is None
    assert [row.model for row in report.unpriced] == ["llama3.1"]
    assert not report.complete
    # The priced part is still told, but no per-1,000 figure pretends to cover every job.
    assert report.total_cost_usd == pytest.approx(0.15)
    assert report.total_per_1000_jobs_usd is None
    document = report.as_json()
    assert document["total"]["complete"] is False
    assert next(m for m in document["models"] if m["model"] == "llama3.1")["cost_usd"] is None


def test_no_prices_at_all_gives_no_cost() -> None:
    report = summarize([ad("succeeded", "gpt-4o-mini", 1, 10, 10)], {})
    assert report.total_cost_usd is None
    assert report.as_json()["total"]["cost_usd"] is None


def test_a_dated_snapshot_takes_its_base_models_price_unless_it_has_its_own() -> None:
    assert price_for("gpt-4o-mini-2024-07-18", PRICES) == ("gpt-4o-mini", MINI)
    assert price_for("gpt-4o-mini", PRICES) == ("gpt-4o-mini", MINI)
    own = Price(input_per_1m=1, output_per_1m=1)
    assert price_for("gpt-4o-2024-08-06", {**PRICES, "gpt-4o-2024-08-06": own}) == ("gpt-4o-2024-08-06", own)
    assert price_for("gpt-4o-mini-tts", PRICES) is None
    assert price_for("gpt-4o-mini-2024", PRICES) is None
    assert price_for(None, PRICES) is None
    report = summarize([ad("succeeded", "gpt-4o-mini-2024-07-18", 1, 1_000_000, 0)], PRICES)
    assert report.models[0].priced_as == "gpt-4o-mini"
    assert report.models[0].cost_usd == pytest.approx(0.15)


def test_missing_fields_count_as_zero_and_no_model() -> None:
    documents = [
        {"status": "succeeded", "model": "gpt-4o-mini"},  # older documents: no usage, no calls
        {"status": "succeeded", "model": "gpt-4o-mini", "token_usage": {"input_tokens": 10}},
        {"status": "dead-lettered", "model": None, "model_calls": 0},  # never reached a model
        {"model": "gpt-4o-mini", "token_usage": None, "model_calls": "two"},
    ]
    report = summarize(documents, PRICES)
    mini = next(row for row in report.models if row.model == "gpt-4o-mini")
    none = next(row for row in report.models if row.model is None)
    assert mini.jobs_by_status == {"succeeded": 2, "failed": 0, "dead-lettered": 0, "unknown": 1}
    assert (mini.model_calls, mini.input_tokens, mini.output_tokens, mini.total_tokens) == (0, 10, 0, 10)
    assert none.jobs_by_status["dead-lettered"] == 1
    assert none.total_tokens == 0
    assert report.unpriced == []  # no tokens spent: nothing left unpriced


def test_prices_parse_from_json_and_say_what_is_wrong() -> None:
    assert parse_prices('{"gpt-4o-mini": {"input_per_1m": 0.15, "output_per_1m": 0.6}}') == {
        "gpt-4o-mini": MINI
    }
    assert parse_prices("") == {}
    with pytest.raises(ValueError, match="not JSON"):
        parse_prices("{gpt-4o-mini: 0.15}")
    with pytest.raises(ValueError, match=r"gpt-4o-mini\.output_per_1m: Field required"):
        parse_prices('{"gpt-4o-mini": {"input_per_1m": 0.15}}')
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        parse_prices('{"m": {"input_per_1m": -1, "output_per_1m": 1}}')
    with pytest.raises(ValueError, match=r"m\.currency: Extra inputs"):
        parse_prices('{"m": {"input_per_1m": 1, "output_per_1m": 1, "currency": "EUR"}}')


def test_the_setting_reads_openai_prices_and_rejects_a_bad_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_PRICES", raising=False)
    assert OpenAISettings().prices == {}
    monkeypatch.setenv("OPENAI_PRICES", '{"gpt-4o-mini": {"input_per_1m": 0.15, "output_per_1m": 0.60}}')
    assert OpenAISettings().prices == {"gpt-4o-mini": MINI}
    monkeypatch.setenv("OPENAI_PRICES", '{"gpt-4o-mini": 0.15}')
    with pytest.raises(SettingsError, match=r"OPENAI_PRICES: gpt-4o-mini: .*expected \{\"MODEL\""):
        load_settings()
