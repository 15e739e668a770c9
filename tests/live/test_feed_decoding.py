"""Which `ad-results` values the notifier can route, and which it skips."""

from __future__ import annotations

from typing import Any

import pytest

from live.feed import NotAResult, decode_result, wants_live


def test_a_result_is_routed_by_its_user_id_and_kept_whole() -> None:
    value = b'{"job_id": "j-1", "user_id": "u-1", "status": "failed", "error": "x", "extra": [1]}'

    user_id, payload = decode_result(value)

    assert user_id == "u-1"
    assert payload == {"job_id": "j-1", "user_id": "u-1", "status": "failed", "error": "x", "extra": [1]}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "no value"),
        (b"", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"{not json", "not JSON"),
        (b'{"user_id": "u-1", "score": NaN}', "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b'["u-1"]', "not a JSON object"),
        (b'"u-1"', "not a JSON object"),
        (b"{}", "no string user_id"),
        (b'{"user_id": null}', "no string user_id"),
        (b'{"user_id": 42}', "no string user_id"),
        (b'{"user_id": ""}', "no string user_id"),
    ],
    ids=repr,
)
def test_values_without_a_routable_user_are_refused(value: bytes | None, reason: str) -> None:
    with pytest.raises(NotAResult, match=reason):
        decode_result(value)


@pytest.mark.parametrize(
    ("notify", "pushed"),
    [
        ({"email": None, "live": True}, True),
        ({"email": "ada@example.com", "live": False}, False),
        ({"email": "ada@example.com"}, False),
        (None, True),  # a failure the worker could not fully read still reaches the user
    ],
)
def test_only_jobs_that_asked_for_live_notification_are_pushed(notify: Any, pushed: bool) -> None:
    payload: dict[str, Any] = {"user_id": "u-1", "job_id": "j-1"}
    if notify is not None:
        payload["notify"] = notify
    assert wants_live(payload) is pushed
