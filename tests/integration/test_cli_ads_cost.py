"""`ads cost` as an operator runs it, on the real store.

Given terminal ads documents of the shape the worker stores (`status`, `model`,
`completed_at`, `model_calls`, `token_usage`, `runs`), when the operator asks what the
last day cost, then each model's jobs, calls and tokens are summed, priced from
OPENAI_PRICES where a price is set, and never guessed where none is.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.worker import cli_process, run_cli

PRICES = '{"gpt-4o-mini": {"input_per_1m": 0.15, "output_per_1m": 0.60}}'
SNAPSHOT = "gpt-4o-mini-2024-07-18"


def cli_env(run_id: str, prices: str = PRICES) -> dict[str, str]:
    return {"MONGODB_DATABASE": f"test_{run_id}", "OPENAI_PRICES": prices, "LOG_LEVEL": "WARNING"}


def ad(
    job_id: str,
    status: str,
    model: str | None,
    *,
    at: datetime,
    calls: int = 1,
    input_tokens: int = 0,
    output_tokens: int = 0,
) -> dict[str, Any]:
    return {
        "_id": job_id,
        "user_id": "u-1",
        "platform": "META_FEED",
        "status": status,
        "model": model,
        "completed_at": at,
        "model_calls": calls,
        "token_usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
        "runs": [{"status": status, "completed_at": at, "model_calls": calls}],
        "request": {"job_id": job_id, "product": {"name": "Lumen desk lamp"}},
    }


async def test_cost_by_model_from_the_last_day(database: Any, run_id: str) -> None:
    now = datetime.now(UTC)
    recent = now - timedelta(hours=1)
    await database["ads"].insert_many(
        [
            ad("ad-1", "succeeded", SNAPSHOT, at=recent, input_tokens=600_000, output_tokens=100_000),
            ad("ad-2", "succeeded", SNAPSHOT, at=recent, calls=2, input_tokens=300_000, output_tokens=50_000),
            ad("ad-3", "failed", SNAPSHOT, at=recent, calls=2, input_tokens=100_000, output_tokens=50_000),
            # A repair round that still broke the limits: paid for, then dead-lettered.
            ad("ad-4", "dead-lettered", SNAPSHOT, at=recent, calls=2, input_tokens=0, output_tokens=50_000),
            # A document stored before tokens were recorded: counted as a job, 0 tokens.
            {"_id": "ad-5", "status": "succeeded", "model": SNAPSHOT, "completed_at": recent},
            ad("ad-6", "succeeded", "llama3.1", at=recent, input_tokens=700, output_tokens=300),
            ad("ad-7", "dead-lettered", None, at=recent, calls=0),  # no model configured
            ad("ad-old", "succeeded", SNAPSHOT, at=now - timedelta(days=2), input_tokens=9_999_999),
        ]
    )
    env = cli_env(run_id)

    report = json.loads(await run_cli("ads", "cost", "--since", "24h", "--json", env=env))
    text = await run_cli("ads", "cost", "--since", "24h", env=env)

    assert report["since"] == "24h"
    by_model = {row["model"]: row for row in report["models"]}
    assert set(by_model) == {SNAPSHOT, "llama3.1", None}
    mini = by_model[SNAPSHOT]
    assert mini["jobs_by_status"] == {"succeeded": 3, "failed": 1, "dead-lettered": 1}
    assert (mini["model_calls"], mini["input_tokens"], mini["output_tokens"], mini["total_tokens"]) == (
        7,
        1_000_000,
        250_000,
        1_250_000,
    )
    assert mini["priced_as"] == "gpt-4o-mini"
    # 1M input at $0.15/M + 0.25M output at $0.60/M = $0.30, over 5 jobs and 3 ads.
    assert mini["cost_usd"] == pytest.approx(0.30)
    assert mini["cost_per_1000_jobs_usd"] == pytest.approx(60.0)
    assert mini["cost_per_1000_succeeded_usd"] == pytest.approx(100.0)
    llama = by_model["llama3.1"]
    assert (llama["input_tokens"], llama["output_tokens"], llama["cost_usd"]) == (700, 300, None)
    assert by_model[None]["jobs_by_status"]["dead-lettered"] == 1
    total = report["total"]
    assert (total["jobs"], total["complete"], total["cost_usd"]) == (7, False, pytest.approx(0.30))
    assert total["cost_per_1000_jobs_usd"] is None

    assert SNAPSHOT in text
    assert "$0.3000" in text
    assert "$60.0000" in text
    assert "no price set" in text
    assert "llama3.1" in text
    assert f"{SNAPSHOT} is priced as gpt-4o-mini" in text
    assert "per 1k ads: over the succeeded jobs only" in text


async def test_no_prices_no_jobs_and_bad_input_are_told(database: Any, run_id: str) -> None:
    now = datetime.now(UTC)
    await database["ads"].insert_one(
        ad("ad-1", "succeeded", "gpt-4o-mini", at=now - timedelta(hours=3), input_tokens=10)
    )

    unpriced = await run_cli("ads", "cost", "--since", "24h", env=cli_env(run_id, prices=""))
    nothing = await run_cli("ads", "cost", "--since", "2h", env=cli_env(run_id))
    bad_prices = await cli_process("ads", "cost", env=cli_env(run_id, prices='{"gpt-4o-mini": 0.15}'))
    bad_since = await cli_process("ads", "cost", "--since", "yesterday", env=cli_env(run_id))

    assert "no price set" in unpriced
    assert "$" not in unpriced  # no made-up cost
    assert nothing.startswith("no ad jobs ended in the last 2h")
    status, _, err = bad_prices
    assert status == 1
    assert "OPENAI_PRICES" in err
    assert "input_per_1m" in err
    assert "Traceback" not in err
    status, _, err = bad_since
    assert (status, err.strip()) == (2, "--since: 'yesterday' is not a span like 30m, 1h or 2d")


async def test_ten_thousand_jobs_are_reported_in_seconds(database: Any, run_id: str) -> None:
    """The read scans `ads` on FerretDB: at 10,000 documents it took about 2.6 s."""
    now = datetime.now(UTC)
    statuses = ("succeeded",) * 8 + ("failed", "dead-lettered")
    documents = [
        ad(
            f"ad-{i}",
            statuses[i % 10],
            SNAPSHOT,
            at=now - timedelta(seconds=i),
            calls=1,
            input_tokens=900,
            output_tokens=250,
        )
        for i in range(10_000)
    ]
    for start in range(0, len(documents), 1_000):
        await database["ads"].insert_many(documents[start : start + 1_000], ordered=False)

    started_s = time.monotonic()
    report = json.loads(await run_cli("ads", "cost", "--since", "24h", "--json", env=cli_env(run_id)))
    elapsed_s = time.monotonic() - started_s

    [mini] = report["models"]
    assert mini["jobs_by_status"] == {"succeeded": 8_000, "failed": 1_000, "dead-lettered": 1_000}
    assert (mini["input_tokens"], mini["output_tokens"]) == (9_000_000, 2_500_000)
    assert mini["cost_usd"] == pytest.approx(2.85)
    assert elapsed_s < 30, f"ads cost took {elapsed_s:.1f} s over 10,000 documents"
