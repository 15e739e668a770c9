"""The `ad-jobs` and `ad-results` contracts, and the model's structured-output schema.

These models are the public interface for integrators: their field descriptions and
examples become the AsyncAPI document.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    JsonValue,
    field_validator,
)

from processors.ads.platforms import Platform
from processors.ids import JobId, UserId

LANGUAGE_PATTERN = r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$"
MAX_URL_CHARS = 2048


def _reject_control_chars(value: str, *, allowed: str = "") -> str:
    # Control characters hide text from reviewers and can fake structure in the prompt.
    if any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in value):
        raise ValueError("must not contain control characters")
    return value


def _single_line(value: str) -> str:
    return _reject_control_chars(value)


def _multi_line(value: str) -> str:
    return _reject_control_chars(value, allowed="\n\t")


SingleLine = Annotated[str, AfterValidator(_single_line)]
MultiLine = Annotated[str, AfterValidator(_multi_line)]

_EXAMPLE_JOB_ID = "ad-7f3c2a9e-1d2b-4c55-9a0e-4b1f0c6d8e21"
_EXAMPLE_USER_ID = "user-1842"
_EXAMPLE_AUDIENCE = "Students and remote workers who study or work late"
_EXAMPLE_JOB: dict[str, JsonValue] = {
    "job_id": _EXAMPLE_JOB_ID,
    "user_id": _EXAMPLE_USER_ID,
    "product": {
        "name": "Lumen desk lamp",
        "description": "A dimmable LED desk lamp with a warm-to-cool colour range and no flicker.\n"
        "Folds flat; charges a phone over USB-C.",
        "url": "https://example.com/lumen",
    },
    "audience": _EXAMPLE_AUDIENCE,
    "tone": "warm and confident",
    "language": "en",
    "platform": "GOOGLE_SEARCH",
    "variants": 3,
    "notify": {"email": "ada@example.com", "live": True},
}


class Product(BaseModel):
    """What the ad is for."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    name: SingleLine = Field(
        min_length=1, max_length=120, description="Product name, as it may appear in the ad."
    )
    description: MultiLine = Field(
        min_length=1,
        max_length=2000,
        description=(
            "What the product is and does: the facts the copy may use. Newlines and tabs are "
            "allowed, other control characters are not."
        ),
    )
    url: HttpUrl | None = Field(
        default=None, description="Landing page; https only, at most 2048 characters."
    )

    @field_validator("url")
    @classmethod
    def _https_only(cls, url: HttpUrl | None) -> HttpUrl | None:
        if url is None:
            return None
        if url.scheme != "https":
            raise ValueError("must be an https URL")
        if len(str(url)) > MAX_URL_CHARS:
            raise ValueError(f"must be at most {MAX_URL_CHARS} characters")
        return url


class Notify(BaseModel):
    """How to tell the user that the copy is ready."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    email: EmailStr | None = Field(
        default=None, description="Send an AD_READY email to this address when the copy is ready."
    )
    live: bool = Field(default=False, description="Push the result to the user's open WebSocket sessions.")


class AdJob(BaseModel):
    """A request to write ad copy for one product on one platform."""

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        str_strip_whitespace=True,
        json_schema_extra={"examples": [_EXAMPLE_JOB]},
    )

    job_id: JobId = Field(
        description=(
            "Producer-chosen unique id of this job; the idempotency key. Publishing the same "
            "job_id again returns the stored result and does not call the model again. "
            "1-128 characters of letters, digits and `._:-`."
        ),
        examples=[_EXAMPLE_JOB_ID],
    )
    user_id: UserId = Field(
        description="The user who asked for the copy. 1-128 characters of letters, digits and `._:-`.",
        examples=[_EXAMPLE_USER_ID],
    )
    product: Product = Field(description="The product to advertise.")
    audience: SingleLine = Field(
        min_length=1,
        max_length=300,
        description="Who the ad speaks to.",
        examples=[_EXAMPLE_AUDIENCE],
    )
    tone: SingleLine = Field(
        default="friendly",
        min_length=1,
        max_length=60,
        description="Voice of the copy, e.g. `playful`, `professional`.",
        examples=["warm and confident", "playful"],
    )
    language: str = Field(
        default="en",
        max_length=35,
        pattern=LANGUAGE_PATTERN,
        description="Language of the copy as a BCP 47 tag, e.g. `en`, `de-CH`, `pt-BR`.",
        examples=["en", "de-CH"],
    )
    platform: Platform = Field(
        description="Where the ad runs; decides the fields' meaning and character limits."
    )
    variants: int = Field(default=3, ge=1, le=5, description="How many alternative versions to write.")
    notify: Notify = Field(default_factory=Notify, description="Notifications when the copy is ready.")


class AdVariant(BaseModel):
    """One version of the ad copy."""

    # No length constraints here: this is also the model's output schema, and the limits
    # depend on the platform; they are checked after generation instead.
    model_config = ConfigDict(extra="forbid")

    headline: str = Field(description="The headline, within the platform's headline limit.")
    body: str = Field(
        description="The main text (description, primary text or post text), within the platform's limit."
    )
    call_to_action: str | None = Field(
        default=None,
        description="A call-to-action button label from the platform's list, or null if it has none.",
    )


class AdCopySet(BaseModel):
    """The model's answer: the requested number of ad copy variants."""

    model_config = ConfigDict(extra="forbid")

    variants: list[AdVariant] = Field(description="The ad copy variants, as many as requested.")


class DocumentRef(BaseModel):
    """Where the full record of a job is stored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    collection: Literal["ads"] = Field(default="ads", description="Store collection.")
    id: str = Field(description="Document id: the job_id.")


class AdResult(BaseModel):
    """The outcome of an ad job, published on `ad-results`."""

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "job_id": _EXAMPLE_JOB_ID,
                    "user_id": _EXAMPLE_USER_ID,
                    "status": "succeeded",
                    "state": "succeeded",
                    "variants": [
                        {
                            "headline": "Glare-free light, late nights",
                            "body": "Warm-to-cool LED light with no flicker. Folds flat, charges your phone.",
                            "call_to_action": None,
                        }
                    ],
                    "error": None,
                    "error_class": None,
                    "document": {"collection": "ads", "id": _EXAMPLE_JOB_ID},
                    "model": "gpt-4o-mini-2024-07-18",
                    "platform": "GOOGLE_SEARCH",
                    "product_name": "Lumen desk lamp",
                    "notify": {"email": "ada@example.com", "live": True},
                    "completed_at": "2025-01-31T12:00:00Z",
                }
            ]
        },
    )

    job_id: str = Field(description="The job this result answers.")
    user_id: str = Field(description="The user who asked for the copy.")
    status: Literal["succeeded", "failed"] = Field(description="Whether copy was written.")
    state: Literal["succeeded", "failed", "dead-lettered"] | None = Field(
        default=None,
        description=(
            "The job's final state: `succeeded`; `failed`, a verdict on the job (a refusal, copy "
            "out of bounds after the repair round, no model configured, or its attempts used up "
            "by the model's transient errors); or `dead-lettered`, sent to `ad-jobs.dlq` for "
            "another reason (an unexpected error, say). Both failures have `status` `failed`. "
            "Absent from results of workers that predate it."
        ),
    )
    variants: list[AdVariant] | None = Field(
        default=None, description="The copy, when `succeeded`; within the platform's limits."
    )
    error: str | None = Field(
        default=None, description="Why the job failed, when `failed`. Never holds secrets."
    )
    error_class: str | None = Field(
        default=None,
        description="Machine-readable failure kind, when `failed`, e.g. `Refusal`, `OutOfBounds`.",
    )
    document: DocumentRef = Field(description="The stored record of the job.")
    model: str | None = Field(default=None, description="The model that wrote the copy.")
    platform: Platform | None = Field(default=None, description="The job's target platform.")
    product_name: str | None = Field(default=None, description="The job's product name.")
    notify: Notify | None = Field(
        default=None, description="The job's notification wishes, for the notifiers downstream."
    )
    completed_at: datetime = Field(description="When the job finished, UTC.")
