"""`job show`: a job's attempts from its document and topic records, its `--json` shape, its text."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from streams.cli.jobs import render_story
from streams.cli.sightings import Sighting
from streams.cli.story import JobStory

T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)


def retried_once() -> dict[str, Any]:
    """A ledger entry as `job_status` returns it: attempt 1 failed, attempt 2 sent."""
    return {
        "_id": "otp-42",
        "job_id": "otp-42",
        "type": "SEND_OTP",
        "recipient": "ada@example.com",
        "status": "sent",
        "attempts": 2,
        "created_at": T0,
        "updated_at": T0 + timedelta(seconds=3),
        "provider": "resend",
        "provider_message_id": "msg-1",
        "sent_at": T0 + timedelta(seconds=3),
        "history": [
            {"attempt": 1, "at": T0, "outcome": "retrying", "error": "ProviderUnavailable", "sent": "no"},
            {"attempt": 2, "at": T0 + timedelta(seconds=3), "outcome": "sent"},
        ],
        "events": [{"event_id": "e1", "kind": "delivered", "occurred_at": T0 + timedelta(seconds=5)}],
        "delivery": "delivered",
    }


def retry_record(*, waiting: bool) -> Sighting:
    return Sighting(
        topic="email-jobs.retry",
        kind="retry",
        ref="0:7",
        attempts=1,
        error_class="ProviderUnavailable",
        error_message="resend answered 503",
        failed_at=T0,
        due_at=T0 + timedelta(seconds=2),
        waiting=waiting,
    )


def test_every_attempt_has_its_outcome_and_error_with_the_message_from_the_retry_record() -> None:
    story = JobStory("otp-42", "email", retried_once(), [retry_record(waiting=False)])

    assert story.attempts() == [
        {
            "attempt": 1,
            "at": T0,
            "outcome": "retrying",
            "error": "ProviderUnavailable",
            "error_message": "resend answered 503",
        },
        {
            "attempt": 2,
            "at": T0 + timedelta(seconds=3),
            "outcome": "sent",
            "error": None,
            "error_message": None,
        },
    ]


def test_an_attempt_without_an_outcome_is_in_progress_or_abandoned() -> None:
    lease = T0 + timedelta(seconds=30)
    document = {**retried_once(), "status": "sending", "attempts": 3, "lease_until": lease, "history": []}

    outcomes = [
        (a["attempt"], a["outcome"], a["at"]) for a in JobStory("j", "email", document, []).attempts()
    ]

    assert outcomes == [
        (1, "no outcome recorded (the worker stopped)", None),
        (2, "no outcome recorded (the worker stopped)", None),
        (3, "in progress", lease),
    ]


def test_an_ad_jobs_last_failure_reason_comes_from_its_document() -> None:
    document = {
        "_id": "ad-1",
        "job_id": "ad-1",
        "user_id": "u-1",
        "status": "failed",
        "attempts": 1,
        "error": "no model configured",
        "error_class": "NoModelConfigured",
        "history": [{"attempt": 1, "at": T0, "outcome": "failed", "error_class": "NoModelConfigured"}],
    }

    [attempt] = JobStory("ad-1", "ad", document, []).attempts()

    assert (attempt["error"], attempt["error_message"]) == ("NoModelConfigured", "no model configured")


def test_json_shape_is_the_document_the_attempts_and_the_topic_records() -> None:
    document = {**retried_once(), "code": "482913"}  # a field the ledger never has; redacted anyway
    dead = Sighting(
        topic="email-jobs.dlq",
        kind="dlq",
        ref="1:3",
        attempts=5,
        error_class="ProviderUnavailable",
        error_message=None,
        failed_at=T0,
        reason="attempts-exhausted",
    )
    story = JobStory("otp-42", "email", document, [retry_record(waiting=True), dead])

    shown = json.loads(json.dumps(story.as_json(), default=str))

    assert set(shown) == {"job_id", "kind", "document", "attempts", "topics"}
    assert shown["kind"] == "email"
    assert shown["document"]["code"] == "<redacted>"
    assert "482913" not in json.dumps(shown)
    assert [a["attempt"] for a in shown["attempts"]] == [1, 2]
    retry, dlq = shown["topics"]
    assert (retry["kind"], retry["waiting"]) == ("retry", True)
    assert retry["summary"].startswith("in email-jobs.retry, due at 2026-11-29 14:00:02Z")
    assert dlq["summary"].startswith("in email-jobs.dlq, reason attempts-exhausted (ProviderUnavailable)")


def test_the_text_says_where_the_job_is_now() -> None:
    console = Console(record=True, width=120)
    story = JobStory("otp-42", "email", retried_once(), [retry_record(waiting=False)])

    render_story(console, story)

    text = console.export_text()
    assert "email job otp-42  SEND_OTP to ada@example.com" in text
    assert "ProviderUnavailable: resend answered 503" in text
    assert "not in any retry or dead-letter topic" in text
    assert "was in email-jobs.retry after attempt 1 failed" in text
    assert "delivered" in text


def test_the_text_of_a_waiting_retry() -> None:
    console = Console(record=True, width=120)

    render_story(console, JobStory("otp-42", "email", retried_once(), [retry_record(waiting=True)]))

    text = console.export_text()
    assert "in email-jobs.retry, due at 2026-11-29 14:00:02Z" in text
    assert "not in any retry" not in text
