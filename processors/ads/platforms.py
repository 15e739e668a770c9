"""The platforms we write ad copy for, and the character limits each one enforces.

Every variant has the same shape, ``headline`` + ``body`` + optional
``call_to_action``; the platform decides what the fields mean and how long they may be.

| Platform | Format | `headline` | `body` | `call_to_action` |
|---|---|---|---|---|
| `GOOGLE_SEARCH` | Google responsive search ad | 30 | 90 (description) | null |
| `META_FEED` | Meta feed ad (recommended) | 40 | 125 (primary text) | null or a Meta button |
| `LINKEDIN_SPONSORED` | Sponsored Content (recommended) | 70 | 150 (intro text) | null or a LinkedIn button |
| `X_POST` | Post with a website card | 70 (card headline) | 280 (post text) | null |

"Recommended" limits are the platform's advice to avoid truncation; its hard limits are
higher. Button labels are in `LIMITS[platform].call_to_actions`.

Limits count Unicode code points. Google and X count most CJK characters as two, so
copy in those scripts can still be cut short; Latin-script copy within them never is.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Platform(enum.StrEnum):
    """Target platform of an ad job."""

    GOOGLE_SEARCH = "GOOGLE_SEARCH"
    META_FEED = "META_FEED"
    LINKEDIN_SPONSORED = "LINKEDIN_SPONSORED"
    X_POST = "X_POST"


@dataclass(frozen=True)
class PlatformLimits:
    """What a variant's fields mean on one platform, and their maximum lengths in characters."""

    title: str
    headline_label: str
    headline_chars: int
    body_label: str
    body_chars: int
    # The platform's fixed button labels; empty: the platform has no button, so no CTA.
    call_to_actions: tuple[str, ...] = ()

    def violations(self, headline: str, body: str, call_to_action: str | None) -> list[str]:
        """What is wrong with one variant, in words a model can act on; empty when it fits."""
        problems = []
        if not headline.strip():
            problems.append("headline is empty")
        elif len(headline) > self.headline_chars:
            problems.append(
                f"headline ({self.headline_label}) is {len(headline)} characters, "
                f"the limit is {self.headline_chars}"
            )
        if not body.strip():
            problems.append("body is empty")
        elif len(body) > self.body_chars:
            problems.append(
                f"body ({self.body_label}) is {len(body)} characters, the limit is {self.body_chars}"
            )
        if self.call_to_actions:
            if call_to_action is not None and call_to_action not in self.call_to_actions:
                problems.append("call_to_action must be null or one of: " + ", ".join(self.call_to_actions))
        elif call_to_action is not None:
            problems.append("call_to_action must be null: this platform has no call-to-action button")
        return problems


_META_CTAS = (
    "Shop Now",
    "Learn More",
    "Sign Up",
    "Book Now",
    "Contact Us",
    "Download",
    "Get Offer",
    "Subscribe",
)
_LINKEDIN_CTAS = (
    "Learn More",
    "Sign Up",
    "Register",
    "Download",
    "Subscribe",
    "Request Demo",
    "Apply",
    "Join",
)

LIMITS: dict[Platform, PlatformLimits] = {
    Platform.GOOGLE_SEARCH: PlatformLimits(
        title="Google Ads responsive search ad",
        headline_label="headline",
        headline_chars=30,
        body_label="description",
        body_chars=90,
    ),
    Platform.META_FEED: PlatformLimits(
        title="Meta (Facebook and Instagram) feed ad",
        headline_label="headline",
        headline_chars=40,
        body_label="primary text",
        body_chars=125,
        call_to_actions=_META_CTAS,
    ),
    Platform.LINKEDIN_SPONSORED: PlatformLimits(
        title="LinkedIn Sponsored Content single image ad",
        headline_label="headline",
        headline_chars=70,
        body_label="introductory text",
        body_chars=150,
        call_to_actions=_LINKEDIN_CTAS,
    ),
    Platform.X_POST: PlatformLimits(
        title="X promoted post with a website card",
        headline_label="website card headline",
        headline_chars=70,
        body_label="post text",
        body_chars=280,
    ),
}


def limits_for(platform: Platform) -> PlatformLimits:
    return LIMITS[platform]
