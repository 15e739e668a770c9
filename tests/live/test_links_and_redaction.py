"""`token_url` for the `ws-token` command, and tokens kept out of the logs."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from live.links import token_url
from live.redact import RedactTokens, install_log_redaction, redact
from live.tokens import InvalidToken, verify_token

SECRET = SecretStr("links-secret")
NOW_S = 1_700_000_000.0


@pytest.mark.parametrize(
    ("base_url", "page"),
    [
        ("http://127.0.0.1:8001", "http://127.0.0.1:8001/"),
        ("http://127.0.0.1:8001/", "http://127.0.0.1:8001/"),
        ("https://notify.example.com/ads/", "https://notify.example.com/ads/"),
        ("https://notify.example.com/?lang=en&token=old", "https://notify.example.com/"),
    ],
)
def test_token_url_opens_the_page_with_a_token_for_the_user(base_url: str, page: str) -> None:
    url = token_url("u-1", base_url, secret=SECRET, ttl_s=60, now_s=NOW_S)

    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == page
    assert len(query["token"]) == 1
    assert verify_token(query["token"][0], SECRET, now_s=NOW_S) == "u-1"
    if "lang" in base_url:
        assert query["lang"] == ["en"]


def test_token_url_needs_an_http_base_url() -> None:
    with pytest.raises(ValueError, match="http"):
        token_url("u-1", "127.0.0.1:8001", secret=SECRET, ttl_s=60)


def test_token_url_signs_with_the_given_secret_for_the_given_ttl() -> None:
    url = token_url("u-1", "http://localhost:8001", secret="plain-secret", ttl_s=120, now_s=NOW_S)

    token = parse_qs(urlsplit(url).query)["token"][0]
    assert verify_token(token, SecretStr("plain-secret"), now_s=NOW_S + 119) == "u-1"
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(token, SecretStr("plain-secret"), now_s=NOW_S + 120)


def test_token_url_refuses_an_empty_secret() -> None:
    with pytest.raises(ValueError, match="empty"):
        token_url("u-1", "http://localhost:8001", secret=SecretStr(""), ttl_s=60)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /?token=abc.def HTTP/1.1", "GET /?token=[redacted] HTTP/1.1"),
        ('"WebSocket /ws?token=eyJ.x-_" 403', '"WebSocket /ws?token=[redacted]" 403'),
        ("/?lang=en&token=abc&x=1", "/?lang=en&token=[redacted]&x=1"),
        ("/?TOKEN=abc", "/?TOKEN=[redacted]"),
        ("/?csrftoken=abc", "/?csrftoken=abc"),
        ("no tokens here", "no tokens here"),
    ],
)
def test_redact_hides_token_parameters(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_the_filter_keeps_uvicorn_access_arguments_in_shape() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/?token=secret.sig", "1.1", 200), None,
    )  # fmt: skip

    assert RedactTokens().filter(record)

    assert record.args == ("127.0.0.1:5000", "GET", "/?token=[redacted]", "1.1", 200)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /?token=[redacted] HTTP/1.1" 200'


def test_install_is_idempotent() -> None:
    install_log_redaction(["tests.live.redaction"])
    install_log_redaction(["tests.live.redaction"])

    filters = logging.getLogger("tests.live.redaction").filters
    assert sum(isinstance(f, RedactTokens) for f in filters) == 1
