"""`job show` of an ad job: its final state and every run, replays included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rich.console import Console

from streams.cli.jobs import render_story
from streams.cli.story import JobStory

T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)


def test_the_text_shows_the_final_state_and_each_run() -> None:
    usage = {"input_tokens": 240, "output_tokens": 61, "total_tokens": 301}
    document = {
        "_id": "ad-1",
        "job_id": "ad-1",
        "user_id": "u-1",
        "platform": "GOOGLE_SEARCH",
        "status": "succeeded",
        "attempts": 1,
        "created_at": T0,
        "completed_at": T0 + timedelta(hours=1),
        "request": {"product": {"name": "Lumen desk lamp"}, "notify": {"live": True}},
        "variants": [{"headline": "Glare-free light", "body": "Folds flat."}],
        "history": [{"attempt": 1, "at": T0 + timedelta(hours=1), "outcome": "succeeded"}],
        "runs": [
            {
                "run": 1,
                "replayed_from": None,
                "status": "failed",
                "error_class": "OutOfBounds",
                "model_calls": 2,
                "token_usage": usage,
                "attempts": 1,
                "completed_at": T0,
            },
            {
                "run": 2,
                "replayed_from": "ad-jobs.dlq:0:7",
                "status": "succeeded",
                "error_class": None,
                "model_calls": 1,
                "token_usage": usage,
                "attempts": 1,
                "completed_at": T0 + timedelta(hours=1),
            },
        ],
    }
    console = Console(record=True, width=160)

    render_story(console, JobStory("ad-1", "ad", document, []))

    text = console.export_text()
    assert "  status        succeeded" in text
    assert (
        "run 1         failed OutOfBounds, 2 model calls, 240+61 tokens, 1 attempts, 2026-11-29 14:00:00Z"
        in text
    )
    assert "run 2         succeeded, 1 model calls" in text
    assert "replayed from ad-jobs.dlq:0:7" in text
