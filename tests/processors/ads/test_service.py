"""The service end to end, with the fake OpenAI server and the real store."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from processors.ads.generator import AdCopyGenerator
from processors.ads.service import (
    ATTEMPTS_EXHAUSTED,
    AdService,
    StoredFailure,
    failed_result,
    terminal_status,
)
from processors.ads.store import AdStore, Status
from processors.errors import PermanentError, PoisonMessage, TransientError
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.processors.ads.conftest import make_job

pytestmark = pytest.mark.integration

LEASE_S = 30.0


@pytest.fixture
def service(store: AdStore, generator: AdCopyGenerator) -> AdService:
    return AdService(store, generator, lease_s=LEASE_S)


async def test_a_job_is_generated_stored_and_returned(
    service: AdService, store: AdStore, fake_openai: FakeOpenAI
) -> None:
    job = make_job(notify={"email": "ada@example.com", "live": True})
    result = await service.process(job)
    assert result.status == "succeeded"
    assert (result.platform, result.product_name, result.notify) == (
        job.platform,
        job.product.name,
        job.notify,
    )
    assert (result.job_id, result.user_id, result.model) == (job.job_id, job.user_id, fake_openai.model)
    assert result.variants is not None
    assert len(result.variants) == job.variants
    assert result.document.model_dump() == {"collection": "ads", "id": job.job_id}
    assert result.error is None
    document = await store.get(job.job_id)
    assert document is not None
    assert document["status"] == Status.SUCCEEDED.value


async def test_a_redelivered_job_is_answered_from_the_store_without_a_model_call(
    service: AdService, fake_openai: FakeOpenAI
) -> None:
    job = make_job()
    first = await service.process(job)
    second = await service.process(job)
    assert fake_openai.request_count == 1
    assert second == first


async def test_a_succeeded_job_is_answered_even_with_no_model_configured(
    service: AdService, store: AdStore, fake_openai: FakeOpenAI
) -> None:
    job = make_job()
    first = await service.process(job)
    assert await AdService(store, None, lease_s=LEASE_S).process(job) == first
    assert fake_openai.request_count == 1


async def test_no_model_configured_fails_the_job_for_good(store: AdStore) -> None:
    job = make_job()
    with pytest.raises(PermanentError) as caught:
        await AdService(store, None, lease_s=LEASE_S).process(job)
    assert caught.value.error_class == "NoModelConfigured"
    document = await store.get(job.job_id)
    assert document is not None
    assert (document["status"], document["error_class"]) == (Status.FAILED.value, "NoModelConfigured")


async def test_a_permanent_failure_is_recorded_and_raised(
    service: AdService, store: AdStore, fake_openai: FakeOpenAI
) -> None:
    job = make_job()
    fake_openai.script("refusal")
    with pytest.raises(PermanentError) as caught:
        await service.process(job)
    document = await store.get(job.job_id)
    assert document is not None
    assert (document["status"], document["error_class"]) == (Status.FAILED.value, "Refusal")
    failed = failed_result(job, caught.value)
    assert (failed.status, failed.error_class, failed.variants) == ("failed", "Refusal", None)
    assert failed.error == "the model refused the request"
    assert (failed.job_id, failed.user_id, failed.document.id) == (job.job_id, job.user_id, job.job_id)


async def test_a_transient_failure_releases_the_job_for_the_retry(
    service: AdService, store: AdStore, fake_openai: FakeOpenAI
) -> None:
    job = make_job()
    fake_openai.script("server_error")
    with pytest.raises(TransientError) as caught:
        await service.process(job)
    assert caught.value.error_class == "ServerError"
    document = await store.get(job.job_id)
    assert document is not None
    assert (document["status"], document["error_class"]) == (Status.RETRYING.value, "ServerError")
    assert "lease_until" not in document
    result = await service.process(job)  # the retry, at once: no lease in the way
    assert result.status == "succeeded"
    document = await store.get(job.job_id)
    assert document is not None
    assert document["attempts"] == 2
    assert "error_class" not in document


async def test_a_job_in_progress_elsewhere_is_not_generated_twice(
    service: AdService, fake_openai: FakeOpenAI
) -> None:
    job = make_job()
    fake_openai.script(Behaviour("good", delay_s=1.0))
    first = asyncio.create_task(service.process(job))
    deadline_s = time.monotonic() + 5
    while fake_openai.request_count == 0:  # wait until the first worker holds the lease
        assert time.monotonic() < deadline_s, "the first worker never called the model"
        await asyncio.sleep(0.01)
    with pytest.raises(TransientError) as caught:
        await service.process(job)
    assert caught.value.error_class == "ClaimHeld"
    assert caught.value.retry_after_ms is not None
    assert 0 < caught.value.retry_after_ms <= LEASE_S * 1000
    assert (await first).status == "succeeded"
    assert fake_openai.request_count == 1


def test_the_lease_must_outlast_the_model_calls(store: AdStore, generator: AdCopyGenerator) -> None:
    with pytest.raises(ValueError, match="lease_s"):
        AdService(store, generator, lease_s=generator.max_duration_s)


async def test_an_unexpected_error_releases_the_claim_at_once(
    store: AdStore, generator: AdCopyGenerator
) -> None:
    class Broken(AdCopyGenerator):
        async def generate(self, job: object) -> object:  # type: ignore[override]
            raise RuntimeError("a bug")

    broken = Broken(generator.model, None, "http://127.0.0.1:9/v1", timeout_s=1.0)
    service = AdService(store, broken, lease_s=300)
    job = make_job()
    try:
        with pytest.raises(RuntimeError):
            await service.process(job)
    finally:
        await broken.aclose()
    document = await store.get(job.job_id)
    assert document is not None
    assert document["status"] == Status.RETRYING.value
    # A retry can claim it now, without waiting out the 300 s lease.
    assert (await AdService(store, generator, lease_s=300).process(job)).status == "succeeded"


async def test_a_redelivered_failed_job_raises_its_failure_again_without_a_model_call(
    service: AdService, store: AdStore, fake_openai: FakeOpenAI
) -> None:
    job = make_job()
    fake_openai.script("refusal")
    with pytest.raises(PermanentError):
        await service.process(job)
    fake_openai.script("good")
    for deliverer in (service, AdService(store, service._generator, lease_s=LEASE_S)):
        with pytest.raises(StoredFailure) as caught:
            await deliverer.process(job)
        assert (caught.value.error_class, caught.value.reason, caught.value.state) == (
            "Refusal",
            "permanent",
            "failed",
        )
        assert caught.value.message == "the model refused the request"
        result = await deliverer.conclude(job, caught.value, caught.value.reason)
        assert (result.status, result.state, result.error_class) == ("failed", "failed", "Refusal")
    assert fake_openai.request_count == 1
    document = await store.get(job.job_id)
    assert document is not None
    assert [run["status"] for run in document["runs"]] == ["failed"]


async def test_a_job_whose_attempts_run_out_at_the_model_ends_failed(
    service: AdService, store: AdStore, fake_openai: FakeOpenAI
) -> None:
    job = make_job()
    fake_openai.script("server_error")
    with pytest.raises(TransientError) as caught:
        await service.process(job)
    result = await service.conclude(job, caught.value, ATTEMPTS_EXHAUSTED)
    assert (result.status, result.state, result.error_class) == ("failed", "failed", "ServerError")
    document = await store.get(job.job_id)
    assert document is not None
    assert (document["status"], document["reason"], document["error_class"]) == (
        "failed",
        ATTEMPTS_EXHAUSTED,
        "ServerError",
    )
    # Concluded once: the hook running again (the dead letter failed) changes nothing.
    assert (await service.conclude(job, caught.value, ATTEMPTS_EXHAUSTED)).state == "failed"
    with pytest.raises(StoredFailure):
        await service.process(job)
    assert fake_openai.request_count == 1


async def test_an_unexpected_error_that_runs_out_of_attempts_ends_dead_lettered(
    service: AdService, store: AdStore, fake_openai: FakeOpenAI
) -> None:
    job = make_job()
    error = TransientError("unexpected RuntimeError", error_class="UnexpectedError")
    result = await service.conclude(job, error, ATTEMPTS_EXHAUSTED)  # never claimed: the store was down
    assert (result.status, result.state, result.error_class) == ("failed", "dead-lettered", "UnexpectedError")
    with pytest.raises(StoredFailure) as caught:
        await service.process(job)
    assert (caught.value.state, caught.value.reason) == ("dead-lettered", ATTEMPTS_EXHAUSTED)
    assert fake_openai.request_count == 0
    document = await store.get(job.job_id)
    assert document is not None
    assert (document["status"], document["user_id"], document["request"]["job_id"]) == (
        "dead-lettered",
        job.user_id,
        job.job_id,
    )


def test_the_final_status_of_a_dead_letter() -> None:
    model_error = TransientError("OpenAI answered 500", error_class="ServerError")
    assert terminal_status(PermanentError("refused"), "permanent", model_failed=False) is Status.FAILED
    assert terminal_status(model_error, ATTEMPTS_EXHAUSTED, model_failed=True) is Status.FAILED
    assert terminal_status(model_error, ATTEMPTS_EXHAUSTED, model_failed=False) is Status.DEAD_LETTERED
    assert terminal_status(PoisonMessage("oversized", "too big"), "oversized", model_failed=False) is (
        Status.DEAD_LETTERED
    )


async def test_a_replay_runs_a_failed_job_again_and_keeps_both_runs(
    service: AdService, store: AdStore, fake_openai: FakeOpenAI
) -> None:
    job = make_job()
    fake_openai.script("over_limit", "over_limit")
    with pytest.raises(PermanentError) as caught:
        await service.process(job)
    assert caught.value.error_class == "OutOfBounds"
    replay = "ad-jobs.dlq:0:12"
    result = await service.process(job, replay=replay)
    assert (result.status, result.state, result.job_id) == ("succeeded", "succeeded", job.job_id)
    assert fake_openai.request_count == 3
    # The replayed record redelivered, and the first record too: the latest run answers both.
    assert await service.process(job, replay=replay) == result
    assert await service.process(job) == result
    assert fake_openai.request_count == 3
    document = await store.get(job.job_id)
    assert document is not None
    assert [(r["run"], r["replayed_from"], r["status"], r["model_calls"]) for r in document["runs"]] == [
        (1, None, "failed", 2),
        (2, replay, "succeeded", 1),
    ]
    assert document["model_calls"] == 3
    first, second = (run["token_usage"] for run in document["runs"])
    assert first["input_tokens"] > 0, "the answers that failed validation count"
    assert document["token_usage"] == {key: first[key] + second[key] for key in first}


async def test_a_repair_round_records_both_calls_tokens(
    service: AdService, store: AdStore, fake_openai: FakeOpenAI
) -> None:
    job = make_job()
    fake_openai.script("over_limit", "good")
    await service.process(job)
    document = await store.get(job.job_id)
    assert document is not None
    assert document["model_calls"] == 2
    usage = document["token_usage"]
    assert usage["input_tokens"] == 2 * 120, "the fake bills 120 prompt tokens a call"
    assert usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_copy_paid_for_but_not_stored_is_stored_by_the_retry_without_a_second_call(
    database: AsyncDatabase[dict[str, Any]], generator: AdCopyGenerator, fake_openai: FakeOpenAI
) -> None:
    """The store fails right after the model answered: the retry stores the same copy."""

    class FailsOnce(AdStore):
        failed = False

        async def mark_succeeded(self, *args: Any, **kwargs: Any) -> Any:
            if not self.failed:
                self.failed = True
                raise TransientError("the store is not answering", error_class="StoreUnavailable")
            return await super().mark_succeeded(*args, **kwargs)

    flaky = FailsOnce(database["ads"])
    await flaky.ensure_indexes()
    service = AdService(flaky, generator, lease_s=LEASE_S)
    job = make_job()
    try:
        with pytest.raises(TransientError):
            await service.process(job)
        result = await service.process(job)
    finally:
        await flaky.aclose()
    assert result.status == "succeeded"
    assert fake_openai.request_count == 1
    stored = await flaky.get(job.job_id)
    assert stored is not None
    assert stored["model_calls"] == 1
