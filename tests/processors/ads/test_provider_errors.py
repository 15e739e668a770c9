"""Reading the provider's requested delay from its headers."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from processors.ads.provider_errors import retry_after_ms


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1_500),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1_500),
        ({"retry-after-ms": "soon", "retry-after": "2"}, 2_000),
        ({"retry-after": "2"}, 2_000),
        ({"retry-after": "0.25"}, 250),
        ({"retry-after": "-3"}, 0),
        ({"retry-after": "whenever"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], expected: int | None) -> None:
    assert retry_after_ms(headers) == expected


def test_retry_after_as_an_http_date() -> None:
    now_s = 1_700_000_000.0
    assert retry_after_ms({"retry-after": formatdate(now_s + 30, usegmt=True)}, now_s=now_s) == 30_000
