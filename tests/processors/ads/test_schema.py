"""The per-job schema: it carries the variant count, the buttons and the length limits."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from processors.ads.jobs import _EXAMPLE_JOB, AdJob
from processors.ads.platforms import LIMITS, Platform
from processors.ads.schema import (
    SCHEMA_NAME,
    answer_schema,
    longest_answer_chars,
    max_output_tokens,
    response_format,
    text_pattern,
)
from tests.processors.ads.conftest import make_job

WHITESPACE = st.sampled_from([" ", "\t", "\n", "\r", "\u00a0", "\u2003", "\u3000"])


def objects(schema: Any) -> Iterator[dict[str, Any]]:
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            yield schema
        for value in schema.values():
            yield from objects(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from objects(value)


@pytest.mark.parametrize("platform", list(Platform))
@pytest.mark.parametrize("variants", [1, 3, 5])
def test_the_schema_is_strict_and_asks_for_exactly_the_variants(platform: Platform, variants: int) -> None:
    built = response_format(make_job(platform=platform, variants=variants))
    assert built["name"] == SCHEMA_NAME
    assert built["strict"] is True
    array = built["schema"]["properties"]["variants"]
    assert (array["minItems"], array["maxItems"]) == (variants, variants)
    # Strict mode: every object closed, every property required.
    found = list(objects(built["schema"]))
    assert len(found) == 2
    for obj in found:
        assert obj["additionalProperties"] is False
        assert sorted(obj["required"]) == sorted(obj["properties"])


@pytest.mark.parametrize("platform", list(Platform))
def test_call_to_action_is_the_platforms_buttons_or_null(platform: Platform) -> None:
    limits = LIMITS[platform]
    cta = answer_schema(limits, 1)["properties"]["variants"]["items"]["properties"]["call_to_action"]
    if limits.call_to_actions:
        assert cta["type"] == "string"
        assert cta["enum"] == list(limits.call_to_actions)
    else:
        assert cta["type"] == "null"
        assert "enum" not in cta


@pytest.mark.parametrize("platform", list(Platform))
def test_headline_and_body_patterns_carry_the_platforms_limits(platform: Platform) -> None:
    limits = LIMITS[platform]
    item = answer_schema(limits, 1)["properties"]["variants"]["items"]["properties"]
    assert item["headline"]["pattern"] == text_pattern(limits.headline_chars)
    assert item["body"]["pattern"] == text_pattern(limits.body_chars)
    # Only keywords OpenAI's strict mode lists for strings.
    assert set(item["headline"]) == set(item["body"]) == {"type", "description", "pattern"}


def test_the_pattern_is_plain_regex_syntax() -> None:
    assert text_pattern(1) == r"^\S$"
    assert text_pattern(30) == r"^\S([\s\S]{0,28}\S)?$"
    with pytest.raises(ValueError, match="max_chars"):
        text_pattern(0)


def within(text: str, max_chars: int) -> bool:
    """What the pattern means: 1 to max_chars characters, no whitespace at either end."""
    return 1 <= len(text) <= max_chars and text == text.strip()


@given(max_chars=st.sampled_from([1, 2, 3, 30, 90]), text=st.text(max_size=100))
@example(max_chars=30, text="x" * 30)
@example(max_chars=30, text="x" * 31)
@example(max_chars=2, text="a\nb")
@example(max_chars=3, text="a\nb")
@example(max_chars=30, text="x\n")
@example(max_chars=30, text="")
def test_the_pattern_accepts_exactly_the_strings_within_the_limit(max_chars: int, text: str) -> None:
    assert (re.fullmatch(text_pattern(max_chars), text) is not None) == within(text, max_chars)


@given(
    max_chars=st.sampled_from([30, 90]),
    core=st.text(min_size=1, max_size=95),
    before=st.lists(WHITESPACE, max_size=2).map("".join),
    after=st.lists(WHITESPACE, max_size=2).map("".join),
)
def test_the_pattern_refuses_padding_and_blank_text(
    max_chars: int, core: str, before: str, after: str
) -> None:
    text = before + core + after
    assert (re.fullmatch(text_pattern(max_chars), text) is not None) == within(text, max_chars)


@given(platform=st.sampled_from(list(Platform)), text=st.text(min_size=1, max_size=300))
def test_what_the_pattern_accepts_the_validation_accepts(platform: Platform, text: str) -> None:
    limits = LIMITS[platform]
    cta = limits.call_to_actions[0] if limits.call_to_actions else None
    headline_ok = re.fullmatch(text_pattern(limits.headline_chars), text) is not None
    body_ok = re.fullmatch(text_pattern(limits.body_chars), text) is not None
    problems = limits.violations(text if headline_ok else "h", text if body_ok else "b", cta)
    assert problems == []


@pytest.mark.parametrize("platform", list(Platform))
def test_the_token_cap_covers_the_longest_answer(platform: Platform) -> None:
    job = AdJob.model_validate({**_EXAMPLE_JOB, "platform": platform, "variants": 5})
    limits = LIMITS[platform]
    longest = {
        "variants": [
            {
                "headline": "x" * limits.headline_chars,
                "body": "x" * limits.body_chars,
                "call_to_action": max(limits.call_to_actions, key=len) if limits.call_to_actions else None,
            }
        ]
        * 5
    }
    assert longest_answer_chars(job) >= len(json.dumps(longest, separators=(",", ":")))
    # A token per character of the longest answer, and more: no allowed answer is cut off.
    assert max_output_tokens(job) > longest_answer_chars(job)
    # But bounded: a few thousand tokens at most, even for five long X posts.
    assert max_output_tokens(job) < 3_000
