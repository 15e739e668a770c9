"""The `email-jobs` contract: validation, and clear reasons for bad input."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta

import pytest

from processors.decoding import UnknownFields
from processors.email.deadlines import deadline
from processors.email.jobs import SendOtpJob, decode_email_job
from processors.errors import PoisonMessage

OTP = {"type": "SEND_OTP", "job_id": "j-1", "to": "ada@example.com", "code": "123456"}


def encode(**changes: object) -> bytes:
    return json.dumps({**OTP, **changes}).encode()


def reason_of(raw: bytes, max_bytes: int = 65_536) -> str:
    with pytest.raises(PoisonMessage) as caught:
        decode_email_job(raw, max_bytes=max_bytes)
    return caught.value.reason


def test_a_valid_job_decodes() -> None:
    job = decode_email_job(encode(), max_bytes=65_536)
    assert isinstance(job, SendOtpJob)
    assert job.code == "123456"
    assert "123456" not in repr(job)


@pytest.mark.parametrize("code", ["12345a", "123", "12345678901", " 1234 5", ""])
def test_otp_codes_are_4_to_10_digits(code: str) -> None:
    assert reason_of(encode(code=code)) == "schema"


@pytest.mark.parametrize("to", ["ada", "ada@", "@example.com", "ada@exa mple.com"])
def test_recipient_must_be_an_email_address(to: str) -> None:
    assert reason_of(encode(to=to)) == "schema"


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://app.example.com/v?t=1", True),
        ("http://localhost:3000/v?t=1", True),
        ("http://127.0.0.1/v", True),
        ("http://app.example.com/v?t=1", False),
        ("javascript:alert(1)", False),
        ("ftp://example.com/x", False),
    ],
)
def test_verification_links_must_be_https_except_on_localhost(url: str, ok: bool) -> None:
    raw = json.dumps(
        {"type": "VERIFICATION_LINK", "job_id": "v", "to": "ada@example.com", "verification_url": url}
    ).encode()
    if ok:
        assert str(decode_email_job(raw, max_bytes=65_536).verification_url).startswith(url.split("?")[0])
    else:
        assert reason_of(raw) == "schema"


def test_the_schema_reason_names_the_field_but_never_echoes_the_code() -> None:
    with pytest.raises(PoisonMessage) as caught:
        decode_email_job(encode(code="98765x"), max_bytes=65_536)
    assert "code" in caught.value.message
    assert "98765x" not in caught.value.message


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe not utf-8", "invalid-json"),
        (b"{not json", "invalid-json"),
        (b'{"type": "SEND_PIGEON", "job_id": "x"}', "unknown-type"),
        (b"[1, 2, 3]", "schema"),
        # Found by the fuzz test: both made the parser raise, and the job was retried.
        # Python 3.13's parser reads this nesting: then it is a list, not a job (`schema`).
        (b"[" * 5_000 + b"]" * 5_000, "invalid-json" if sys.version_info < (3, 13) else "schema"),
        (encode()[:-1] + b', "expires_in_minutes": ' + b"1" * 5_000 + b"}", "invalid-json"),
        (b'{"job_id": "x"}', "schema"),
    ],
)
def test_bad_input_has_a_clear_reason(raw: bytes, reason: str) -> None:
    assert reason_of(raw) == reason


def test_oversized_payload_is_rejected_before_parsing() -> None:
    assert reason_of(encode(), max_bytes=10) == "oversized"


def test_unknown_fields_from_a_newer_producer_are_ignored_and_named_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unknown = UnknownFields()
    for _ in range(3):
        job = decode_email_job(
            encode(cc="eve@example.com", schema_version=2), max_bytes=65_536, unknown=unknown
        )
        assert isinstance(job, SendOtpJob)
        assert job.schema_version == 2
        assert not hasattr(job, "cc")
    named = [r.getMessage() for r in caplog.records if "does not know" in r.getMessage()]
    assert named == ["SEND_OTP jobs carry fields this worker does not know, ignored: cc (a newer producer?)"]
    assert "eve@" not in caplog.text


def test_known_fields_stay_strict_beside_unknown_ones() -> None:
    assert reason_of(encode(code="12", locale="fr")) == "schema"
    assert reason_of(encode(schema_version=0)) == "schema"
    assert reason_of(encode(not_after="tomorrow")) == "schema"
    assert reason_of(encode(not_after="2026-11-29T10:00:00")) == "schema"  # no offset
    assert reason_of(encode(purpose="Sign In!")) == "schema"


def test_deadline_comes_from_not_after_or_the_codes_lifetime() -> None:
    published = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    otp = decode_email_job(encode(expires_in_minutes=5), max_bytes=65_536)
    assert deadline(otp, published) == published + timedelta(minutes=5)
    assert deadline(otp, None) is None
    explicit = decode_email_job(encode(not_after="2026-11-29T12:01:00+00:00"), max_bytes=65_536)
    assert deadline(explicit, published) == datetime(2026, 11, 29, 12, 1, tzinfo=UTC)
    link = decode_email_job(
        json.dumps(
            {
                "type": "VERIFICATION_LINK",
                "job_id": "v",
                "to": "ada@example.com",
                "verification_url": "https://app.example.com/v?t=1",
                "expires_in_hours": 2,
            }
        ).encode(),
        max_bytes=65_536,
    )
    assert deadline(link, published) == published + timedelta(hours=2)
    welcome = decode_email_job(
        json.dumps({"type": "WELCOME_EMAIL", "job_id": "w", "to": "ada@example.com", "name": "Ada"}).encode(),
        max_bytes=65_536,
    )
    assert deadline(welcome, published) is None


def test_control_characters_in_names_are_rejected() -> None:
    raw = json.dumps(
        {"type": "WELCOME_EMAIL", "job_id": "w", "to": "ada@example.com", "name": "Ada\r\nBcc: eve"}
    ).encode()
    assert reason_of(raw) == "schema"
