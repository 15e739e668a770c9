"""The worker builds the model's budget from OPENAI_RPM and OPENAI_TPM, and lets a job
wait for it most of its lease."""

from __future__ import annotations

import pytest

from processors.ads.budget import ModelBudget
from streams.services import build_generator, build_model_budget
from streams.settings import AdSettings, OpenAISettings, Settings


def settings(**openai: object) -> Settings:
    return Settings(
        openai=OpenAISettings(model="gpt-4o-mini", **openai),  # type: ignore[arg-type]
        ads=AdSettings(lease_s=300),
    )


def test_no_limit_set_no_budget() -> None:
    assert build_model_budget(settings()) is None


@pytest.mark.parametrize(("rpm", "tpm"), [(60, 0), (0, 40_000), (60, 40_000)])
def test_either_limit_makes_a_budget_with_only_that_limit(rpm: int, tpm: int) -> None:
    budget = build_model_budget(settings(rpm=rpm, tpm=tpm))
    assert isinstance(budget, ModelBudget)
    assert (budget.requests is not None, budget.tokens is not None) == (bool(rpm), bool(tpm))


async def test_with_a_budget_a_job_may_wait_for_it_most_of_its_lease() -> None:
    configured = settings(rpm=60, tpm=40_000, timeout_s=60)
    budget = build_model_budget(configured)
    generator = build_generator(configured, "ad-jobs.dlq", budget=budget)
    assert generator is not None
    try:
        # Two calls of 60 s at most, and the rest of 90 % of the 300 s lease to wait.
        assert generator.max_wait_s == pytest.approx(0.9 * 300 - 2 * 60)
        assert generator.max_duration_s < 300
    finally:
        await generator.aclose()
    unbudgeted = build_generator(configured, "ad-jobs.dlq")
    assert unbudgeted is not None
    try:
        assert unbudgeted.max_wait_s == 60  # one call's worst case
    finally:
        await unbudgeted.aclose()
