"""The `email-jobs` contract: one pydantic model per email type, discriminated by `type`.

These models are the public interface for integrators: their field descriptions
and examples become the AsyncAPI document.

**Compatibility rule:** fields are only ever added, and a new field is optional. A job
may carry fields this worker does not know (a newer producer): they are ignored, and
their names logged once per type. Known fields stay strictly validated.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AnyUrl,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    TypeAdapter,
    field_validator,
)

from processors.decoding import UnknownFields, decode_job
from processors.ids import JobId

_LOCALHOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


def _no_control_chars(value: str) -> str:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain control characters")
    return value


CRITICAL_TYPES = frozenset({"SEND_OTP", "VERIFICATION_LINK"})
"""Time-critical types: consumed from `email-jobs`, first in the provider's budget."""
BULK_TYPES = frozenset({"WELCOME_EMAIL", "AD_READY"})
"""Bulk types: consumed from `email-bulk`; published on `email-jobs`, they are moved there."""

DEFAULT_PURPOSE = "sign-in"


class _EmailJobBase(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    job_id: JobId = Field(
        description=(
            "Producer-chosen unique id of this job; the idempotency key. Publishing the "
            "same job_id twice sends at most one email. 1-128 characters of "
            "letters, digits and `._:-`."
        ),
        examples=["otp-7f3c2a9e-1d2b-4c55-9a0e-4b1f0c6d8e21"],
    )
    to: EmailStr = Field(description="Recipient email address.", examples=["ada@example.com"])
    not_after: AwareDatetime | None = Field(
        default=None,
        description=(
            "RFC 3339 time with an offset. After it the email is not sent: the job goes to the "
            "dead-letter topic with reason `expired`. For SEND_OTP and VERIFICATION_LINK the worker "
            "derives it, when absent, from the message's Kafka timestamp plus the code's or link's "
            "lifetime."
        ),
        examples=["2026-11-29T14:10:00Z"],
    )
    transactional_override: bool = Field(
        default=False,
        description=(
            "Send even to an address on the suppression list (it bounced hard or complained). "
            "For security codes the user asked for; never for bulk mail."
        ),
    )
    schema_version: int | None = Field(
        default=None,
        ge=1,
        description=(
            "The version of this contract the producer wrote (optional, informational). Fields "
            "are only added, and new fields are optional: an older worker ignores the ones it "
            "does not know."
        ),
    )


class SendOtpJob(_EmailJobBase):
    """A one-time passcode the user types in to sign in or confirm an action."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "SEND_OTP",
                    "job_id": "otp-7f3c2a9e-1d2b-4c55-9a0e-4b1f0c6d8e21",
                    "to": "ada@example.com",
                    "code": "482913",
                    "expires_in_minutes": 10,
                }
            ]
        }
    )

    type: Literal["SEND_OTP"] = Field(description="Email type discriminator.")
    code: str = Field(
        pattern=r"^[0-9]{4,10}$",
        repr=False,
        description="The passcode: 4 to 10 digits. Never stored or logged by the worker.",
        examples=["482913"],
    )
    expires_in_minutes: int = Field(
        default=10,
        ge=1,
        le=1440,
        description=(
            "How long the code stays valid, in minutes (shown to the user). Unless `not_after` "
            "is given, the code is not sent once this has passed since the job was published."
        ),
    )
    purpose: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,39}$")] = Field(
        default=DEFAULT_PURPOSE,
        description=(
            "What the code is for. A newer code for the same recipient and purpose supersedes "
            "older ones: an older code that comes up after a newer one was sent is dropped."
        ),
        examples=["sign-in", "password-reset"],
    )


class WelcomeEmailJob(_EmailJobBase):
    """A welcome email after sign-up."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "WELCOME_EMAIL",
                    "job_id": "welcome-u-1024",
                    "to": "ada@example.com",
                    "name": "Ada Lovelace",
                }
            ]
        }
    )

    type: Literal["WELCOME_EMAIL"] = Field(description="Email type discriminator.")
    name: Annotated[str, Field(min_length=1, max_length=100)] = Field(
        description="The user's display name, as they typed it (HTML is escaped).",
        examples=["Ada Lovelace"],
    )

    _check_name = field_validator("name")(_no_control_chars)


class VerificationLinkJob(_EmailJobBase):
    """A link the user clicks to verify their email address."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "VERIFICATION_LINK",
                    "job_id": "verify-u-1024-1",
                    "to": "ada@example.com",
                    "name": "Ada Lovelace",
                    "verification_url": "https://app.example.com/verify?token=q8Zr2kLm",
                    "expires_in_hours": 24,
                }
            ]
        }
    )

    type: Literal["VERIFICATION_LINK"] = Field(description="Email type discriminator.")
    name: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="The user's display name, if known."
    )
    verification_url: AnyUrl = Field(
        repr=False,
        description=(
            "The verification link, with its token. Must be https; http is accepted "
            "only for localhost. Never stored or logged by the worker."
        ),
        examples=["https://app.example.com/verify?token=q8Zr2kLm"],
    )
    expires_in_hours: int = Field(
        default=24,
        ge=1,
        le=720,
        description=(
            "How long the link stays valid, in hours. Unless `not_after` is given, the link is "
            "not sent once this has passed since the job was published."
        ),
    )

    _check_name = field_validator("name")(lambda value: None if value is None else _no_control_chars(value))

    @field_validator("verification_url")
    @classmethod
    def _https_only(cls, url: AnyUrl) -> AnyUrl:
        if len(str(url)) > 2048:
            raise ValueError("must be at most 2048 characters")
        if url.scheme == "https":
            return url
        if url.scheme == "http" and (url.host or "") in _LOCALHOSTS:
            return url
        raise ValueError("must be an https URL (http is allowed only for localhost)")


class AdReadyJob(_EmailJobBase):
    """Tells a user that the ad copy they asked for is ready."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "AD_READY",
                    "job_id": "ad-ready-ad-42",
                    "to": "ada@example.com",
                    "product_name": "Lumen desk lamp",
                    "platform": "GOOGLE_SEARCH",
                    "headlines": ["Glare-free light for long nights"],
                    "ad_job_id": "ad-42",
                }
            ]
        }
    )

    type: Literal["AD_READY"] = Field(description="Email type discriminator.")
    product_name: Annotated[str, Field(min_length=1, max_length=120)] = Field(
        description="The product the ad copy is for."
    )
    platform: Annotated[str, Field(min_length=1, max_length=40)] = Field(
        description="Target platform of the ad copy."
    )
    headlines: list[Annotated[str, Field(max_length=300)]] = Field(
        min_length=1, max_length=10, description="The generated headlines, one per variant."
    )
    ad_job_id: JobId = Field(description="The ad job that produced the copy.")


EmailJobModel = SendOtpJob | WelcomeEmailJob | VerificationLinkJob | AdReadyJob
EmailJob = Annotated[EmailJobModel, Field(discriminator="type")]
EMAIL_TYPES = ("SEND_OTP", "WELCOME_EMAIL", "VERIFICATION_LINK", "AD_READY")

_ADAPTER: TypeAdapter[EmailJobModel] = TypeAdapter(EmailJob)


def decode_email_job(raw: bytes, *, max_bytes: int, unknown: UnknownFields | None = None) -> EmailJobModel:
    """Decode and validate one job, or raise `PoisonMessage` with a reason.

    `unknown` is told the fields a newer producer added, which are ignored."""
    return decode_job(raw, _ADAPTER, max_bytes=max_bytes, known_types=EMAIL_TYPES, unknown=unknown)
