"""Tokens: a round trip works; anything expired, tampered with or foreign is refused."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import SecretStr

from live.tokens import InvalidToken, _sign, issue_token, read_token, verify_token

SECRET = SecretStr("s3cret-for-tests")
NOW_S = 1_700_000_000.0


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_round_trip_returns_the_user_id() -> None:
    token = issue_token("u-1", SECRET, ttl_s=60, now_s=NOW_S)

    assert verify_token(token, SECRET, now_s=NOW_S + 59) == "u-1"
    assert read_token(token, SECRET, now_s=NOW_S).expires_s == int(NOW_S) + 60


def test_round_trip_with_a_plain_string_secret_and_unicode_user_id() -> None:
    token = issue_token("usér.1/ü", "plain", ttl_s=60, now_s=NOW_S)

    assert verify_token(token, SecretStr("plain"), now_s=NOW_S) == "usér.1/ü"
    assert token.isascii()


def test_token_is_url_safe() -> None:
    token = issue_token("u-1" * 50, SECRET, ttl_s=60, now_s=NOW_S)

    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


@pytest.mark.parametrize("later_s", [60, 61, 10_000])
def test_expired_token_is_refused(later_s: int) -> None:
    token = issue_token("u-1", SECRET, ttl_s=60, now_s=NOW_S)

    with pytest.raises(InvalidToken) as caught:
        verify_token(token, SECRET, now_s=NOW_S + later_s)

    assert caught.value.reason == "expired"
    assert str(caught.value) == "invalid token: expired"


def test_tampered_signature_is_refused() -> None:
    payload, signature = issue_token("u-1", SECRET, ttl_s=60, now_s=NOW_S).split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]

    with pytest.raises(InvalidToken) as caught:
        verify_token(f"{payload}.{flipped}", SECRET, now_s=NOW_S)

    assert caught.value.reason == "bad signature"


def test_tampered_user_id_is_refused() -> None:
    _, signature = issue_token("u-1", SECRET, ttl_s=60, now_s=NOW_S).split(".")
    forged = b64url(json.dumps({"sub": "u-2", "exp": int(NOW_S) + 60}, separators=(",", ":")).encode())

    with pytest.raises(InvalidToken) as caught:
        verify_token(f"{forged}.{signature}", SECRET, now_s=NOW_S)

    assert caught.value.reason == "bad signature"


def test_extended_expiry_is_refused() -> None:
    _, signature = issue_token("u-1", SECRET, ttl_s=60, now_s=NOW_S).split(".")
    forged = b64url(json.dumps({"sub": "u-1", "exp": int(NOW_S) + 10**6}, separators=(",", ":")).encode())

    with pytest.raises(InvalidToken, match="bad signature"):
        verify_token(f"{forged}.{signature}", SECRET, now_s=NOW_S)


def test_token_signed_with_another_secret_is_refused() -> None:
    token = issue_token("u-1", SecretStr("another secret"), ttl_s=60, now_s=NOW_S)

    with pytest.raises(InvalidToken) as caught:
        verify_token(token, SECRET, now_s=NOW_S)

    assert caught.value.reason == "bad signature"


def signed(payload: bytes) -> str:
    """A token with a valid signature over an arbitrary payload (as if the secret leaked)."""
    encoded = b64url(payload)
    return f"{encoded}.{_sign(encoded, SECRET)}"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "malformed"),
        ("no-dot-at-all", "malformed"),
        ("a.b.c", "malformed"),
        (".signature", "malformed"),
        ("payload.", "malformed"),
        ("x" * 5_000 + ".y", "malformed"),
        # Well-formed but unsigned: the signature is checked before the payload is read.
        ("%%%.***", "bad signature"),
        (signed(b"not json"), "malformed"),
        (signed(b"\xff\xfe"), "malformed"),
        (signed(b"[1, 2]"), "malformed"),
        (signed(b'{"sub": "u-1"}'), "malformed"),
        (signed(b'{"exp": 1800000000}'), "malformed"),
        (signed(b'{"sub": "", "exp": 1800000000}'), "malformed"),
        (signed(b'{"sub": 7, "exp": 1800000000}'), "malformed"),
        (signed(b'{"sub": "u-1", "exp": "1800000000"}'), "malformed"),
        (signed(b'{"sub": "u-1", "exp": true}'), "malformed"),
        (signed(b'{"sub": "u-1", "exp": 1.8e9}'), "malformed"),
    ],
    ids=lambda value: value[:24],
)
def test_malformed_token_is_refused(token: str, reason: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        verify_token(token, SECRET, now_s=NOW_S)

    assert caught.value.reason == reason


def test_token_living_longer_than_the_allowed_ttl_is_refused() -> None:
    token = issue_token("u-1", SECRET, ttl_s=3_600, now_s=NOW_S)

    assert read_token(token, SECRET, now_s=NOW_S, max_ttl_s=3_600).user_id == "u-1"
    with pytest.raises(InvalidToken, match="lifetime too long"):
        read_token(token, SECRET, now_s=NOW_S, max_ttl_s=60)


@pytest.mark.parametrize(
    ("user_id", "ttl_s", "secret"),
    [("", 60, SECRET), ("u" * 257, 60, SECRET), ("u-1", 0, SECRET), ("u-1", 60, SecretStr(""))],
)
def test_issue_refuses_bad_arguments(user_id: str, ttl_s: int, secret: SecretStr) -> None:
    with pytest.raises(ValueError, match=r"must|empty") as caught:
        issue_token(user_id, secret, ttl_s=ttl_s, now_s=NOW_S)

    assert not isinstance(caught.value, InvalidToken)
