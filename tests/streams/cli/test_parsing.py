"""The CLI's small rules: `--since` spans, redaction, and one-line errors with the old exit codes."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from streams.cli import main
from streams.cli.redaction import REDACTED, record_value, redact
from streams.cli.since import parse_since


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("90s", timedelta(seconds=90)),
        (" 12h ", timedelta(hours=12)),
    ],
)
def test_since_reads_a_number_and_a_unit(text: str, span: timedelta) -> None:
    assert parse_since(text) == span


@pytest.mark.parametrize("text", ["", "1", "h", "0m", "1.5h", "-1h", "1w", "1 h", "1hour", "2026-11-29"])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="not a span like 30m, 1h or 2d"):
        parse_since(text)


def test_codes_and_links_are_redacted_at_any_depth() -> None:
    data = {
        "type": "SEND_OTP",
        "code": "482913",
        "job": {"verification_url": "https://app.example.com/verify?token=s3cret", "to": "ada@example.com"},
        "list": [{"code": "111111"}],
    }

    shown = json.dumps(redact(data))

    assert "482913" not in shown
    assert "s3cret" not in shown
    assert "111111" not in shown
    assert redact(data)["job"] == {"verification_url": REDACTED, "to": "ada@example.com"}


def test_a_record_value_is_redacted_unless_raw() -> None:
    value = json.dumps({"job_id": "otp-1", "code": "482913"}).encode()

    assert record_value(value, raw=False) == {"job_id": "otp-1", "code": REDACTED}
    assert record_value(value, raw=True) == {"job_id": "otp-1", "code": "482913"}
    assert record_value(b"\xff code 482913", raw=False) == "<13 bytes, not JSON>"


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["jobs"], 2, "python -m streams.cli jobs: Missing option '--to'."),
        (["jobs", "--to", "ada@example.com", "--since", "1w"], 2, "--since: '1w' is not a span like"),
        (["jobs", "--to", "ada", "--since", "1h"], 2, "--to: 'ada' is not an email address"),
        (["dlq", "show"], 2, "python -m streams.cli dlq show: Missing argument 'ref'."),
        (["dlq", "lst"], 2, "No such command 'lst'."),
        (["suppressions", "add", "a@example.com", "--reason", "x"], 2, "Invalid value for '--reason'"),
        (["send-otp", "--to", "ada@example.com", "--code", "12a45"], 2, "invalid job: code:"),
        (["dlq", "list", "--topic", "email-jobs"], 2, "--topic: 'email-jobs' is not a dead-letter topic"),
    ],
)
def test_errors_are_one_line_on_stderr_with_the_old_exit_status(
    argv: list[str], status: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == status

    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert message in err
    assert "12a45" not in err, "an invalid code is not echoed"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0

    out = capsys.readouterr().out
    for command in ("send-otp", "welcome", "verify-link", "ad", "ws-token", "dlq", "job", "jobs", "erase"):
        assert f" {command} " in out
