"""Which dead letters `dlq list` and `dlq replay` select."""

from __future__ import annotations

from datetime import UTC, datetime

from streams.dlq import DeadLetterRecord, Filter, replay_headers, summarize
from streams.retry import headers as h
from streams.retry.record import RawRecord

AT_MS = int(datetime(2026, 11, 1, 12, tzinfo=UTC).timestamp() * 1000)


def letter(reason: str, value: bytes = b'{"type": "SEND_OTP"}', at_ms: int = AT_MS) -> DeadLetterRecord:
    headers = {h.DLQ_REASON: reason, h.LAST_FAILURE_AT_MS: str(at_ms), h.ATTEMPT: "3", "traceparent": "t"}
    return DeadLetterRecord(RawRecord("email-jobs.dlq", 1, 5, None, value, headers), timestamp_ms=at_ms)


def test_an_empty_filter_selects_everything() -> None:
    assert Filter().matches(letter("permanent"))


def test_filter_by_reason_and_type() -> None:
    assert Filter(reason="schema").matches(letter("schema"))
    assert not Filter(reason="schema").matches(letter("permanent"))
    assert Filter(job_type="SEND_OTP").matches(letter("schema"))
    assert not Filter(job_type="WELCOME_EMAIL").matches(letter("schema"))
    assert letter("x", b"not json").job_type == "(undecodable)"
    assert not Filter(job_type="SEND_OTP").matches(letter("x", b"not json"))


def test_since_is_inclusive_and_until_exclusive() -> None:
    at = datetime.fromtimestamp(AT_MS / 1000, tz=UTC)
    assert Filter(since=at).matches(letter("p"))
    assert not Filter(until=at).matches(letter("p"))
    assert Filter(until=datetime(2026, 11, 2, tzinfo=UTC)).matches(letter("p"))


def test_summary_counts_by_reason_and_type() -> None:
    counts = summarize([letter("schema"), letter("schema"), letter("permanent", b"[]")])
    assert counts == {("schema", "SEND_OTP"): 2, ("permanent", "(none)"): 1}


def test_replay_resets_the_failure_history_and_keeps_the_producers_headers() -> None:
    headers = replay_headers(letter("permanent"))
    assert headers == {"traceparent": "t", h.REPLAYED_FROM: "email-jobs.dlq:1:5"}
