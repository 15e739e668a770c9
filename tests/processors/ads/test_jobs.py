"""The `ad-jobs` and `ad-results` contracts: what integrators may send and receive."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from processors.ads.jobs import AdJob, AdResult
from tests.processors.ads.conftest import make_job


def example(model: type[AdJob] | type[AdResult]) -> dict[str, Any]:
    extra = model.model_config.get("json_schema_extra")
    assert isinstance(extra, dict)
    examples = extra["examples"]
    assert isinstance(examples, list)
    first = examples[0]
    assert isinstance(first, dict)
    return first


def errors_for(**changes: Any) -> list[tuple[str, ...]]:
    with pytest.raises(ValidationError) as caught:
        make_job(**changes)
    return [tuple(str(part) for part in error["loc"]) for error in caught.value.errors()]


def product(**changes: Any) -> dict[str, Any]:
    return {"name": "Lamp", "description": "A lamp."} | changes


def test_the_examples_are_valid() -> None:
    job = AdJob.model_validate(example(AdJob))
    assert job.variants == 3
    assert job.notify.live is True
    AdResult.model_validate(example(AdResult))


def test_defaults() -> None:
    job = AdJob.model_validate(
        {
            "job_id": "a",
            "user_id": "u",
            "product": product(),
            "audience": "Everyone",
            "platform": "X_POST",
        }
    )
    assert (job.language, job.tone, job.variants, job.notify.email, job.notify.live) == (
        "en",
        "friendly",
        3,
        None,
        False,
    )


def test_every_field_is_described_for_integrators() -> None:
    for model in (AdJob, AdResult):
        schema = model.model_json_schema()
        assert schema["examples"]
        for name, field in schema["properties"].items():
            assert field.get("description"), f"{model.__name__}.{name} has no description"


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"job_id": ""}, ("job_id",)),
        ({"job_id": "a" * 129}, ("job_id",)),
        ({"job_id": "has space"}, ("job_id",)),
        ({"user_id": "ü"}, ("user_id",)),
        ({"product": product(name="n" * 121)}, ("product", "name")),
        ({"product": product(description="d" * 2001)}, ("product", "description")),
        ({"audience": "a" * 301}, ("audience",)),
        ({"tone": "t" * 61}, ("tone",)),
        ({"language": "english please"}, ("language",)),
        ({"language": "en-" + "a" * 40}, ("language",)),
        ({"variants": 0}, ("variants",)),
        ({"variants": 6}, ("variants",)),
        ({"platform": "MYSPACE"}, ("platform",)),
        ({"notify": {"email": "not-an-address"}}, ("notify", "email")),
    ],
)
def test_out_of_range_fields_are_rejected(changes: dict[str, Any], where: tuple[str, ...]) -> None:
    assert where in errors_for(**changes)


@pytest.mark.parametrize(
    "url",
    ["http://example.com/lamp", "ftp://example.com/lamp", "not a url", "https://" + "a" * 2100 + ".com"],
)
def test_product_url_must_be_https(url: str) -> None:
    assert ("product", "url") in errors_for(product=product(url=url))


def test_description_keeps_newlines_and_tabs_but_no_other_control_characters() -> None:
    job = make_job(product=product(description="Line one\n\tLine two"))
    assert job.product.description == "Line one\n\tLine two"
    for bad in ("\x00", "\x1b[31m", "\r", "\x85"):
        assert ("product", "description") in errors_for(product=product(description=f"A{bad}B"))


@pytest.mark.parametrize("field", ["audience", "tone"])
def test_single_line_fields_reject_newlines(field: str) -> None:
    assert (field,) in errors_for(**{field: "first\nsecond"})


def test_result_rejects_unknown_status() -> None:
    with pytest.raises(ValidationError):
        AdResult.model_validate(example(AdResult) | {"status": "pending"})


def test_unknown_fields_from_a_newer_producer_are_ignored() -> None:
    job = make_job(surprise=1, notify={"email": "ada@example.com", "sms": True})
    assert job.notify.email == "ada@example.com"
