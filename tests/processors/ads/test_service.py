"""The service end to end, with the fake OpenAI server and the real store."""

from __future__ import annotations

import asyncio
import time

import pytest

from processors.ads.generator import AdCopyGenerator
from processors.ads.service import AdService, failed_result
from processors.ads.store import AdStore, Status
from processors.errors import PermanentError, TransientError
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
    fake_openai.script("rate_limited")
    with pytest.raises(TransientError) as caught:
        await service.process(job)
    assert caught.value.retry_after_ms == 2_000
    document = await store.get(job.job_id)
    assert document is not None
    assert (document["status"], document["error_class"]) == (Status.RETRYING.value, "RateLimited")
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
