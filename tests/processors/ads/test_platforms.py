"""Platform limits: the real numbers, and the words used to ask the model for a fix."""

from __future__ import annotations

import pytest

from processors.ads.platforms import LIMITS, Platform, limits_for


def test_every_platform_has_limits() -> None:
    assert set(LIMITS) == set(Platform)


@pytest.mark.parametrize(
    ("platform", "headline_chars", "body_chars"),
    [
        (Platform.GOOGLE_SEARCH, 30, 90),
        (Platform.META_FEED, 40, 125),
        (Platform.LINKEDIN_SPONSORED, 70, 150),
        (Platform.X_POST, 70, 280),
    ],
)
def test_limits_are_the_platforms_own(platform: Platform, headline_chars: int, body_chars: int) -> None:
    limits = limits_for(platform)
    assert (limits.headline_chars, limits.body_chars) == (headline_chars, body_chars)


def test_copy_at_the_limit_fits_and_one_more_character_does_not() -> None:
    limits = limits_for(Platform.GOOGLE_SEARCH)
    assert limits.violations("h" * 30, "b" * 90, None) == []
    problems = limits.violations("h" * 31, "b" * 91, None)
    assert problems == [
        "headline (headline) is 31 characters, the limit is 30",
        "body (description) is 91 characters, the limit is 90",
    ]


def test_empty_fields_are_violations() -> None:
    assert limits_for(Platform.X_POST).violations(" ", "", None) == ["headline is empty", "body is empty"]


def test_call_to_action_must_be_a_platform_button_or_null() -> None:
    meta = limits_for(Platform.META_FEED)
    assert meta.violations("Hi", "Body", "Shop Now") == []
    assert meta.violations("Hi", "Body", None) == []
    assert meta.violations("Hi", "Body", "Buy this now!!") != []
    assert limits_for(Platform.GOOGLE_SEARCH).violations("Hi", "Body", "Shop Now") != []
