"""What earlier attempts may have sent, read from a job's ledger document: whether it may
join a batch (`never_sent`), and which recorded batch it is bound to (`pending_batch`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from processors.email.ledger import PendingBatch, never_sent, pending_batch

AT = datetime(2026, 1, 1, tzinfo=UTC)


def document(
    *, history: list[dict[str, Any]] | None = None, notes: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"history": history or [], "notes": notes or []}


def released(attempt: int, sent: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"attempt": attempt, "at": AT, "outcome": "retrying", "error": "X"}
    if sent is not None:
        entry["sent"] = sent
    return entry


def noted(attempt: int, batch_id: str) -> dict[str, Any]:
    return {"attempt": attempt, "at": AT, "batch_id": batch_id, "batch_at": AT}


def test_a_first_attempt_was_never_sent() -> None:
    assert never_sent(document(), 1)


def test_only_attempts_known_to_have_sent_nothing_keep_a_job_batchable() -> None:
    assert never_sent(document(history=[released(1, "no"), released(2, "no")]), 3)
    assert not never_sent(document(history=[released(1, "no"), released(2, "unknown")]), 3)
    # Attempt 2's holder died: no release says what it did.
    assert not never_sent(document(history=[released(1, "no")]), 3)
    # An entry written before the ledger said what was sent.
    assert not never_sent(document(history=[released(1, None)]), 2)


def test_a_job_is_bound_to_its_batch_until_an_answer_refuses_it() -> None:
    bound = document(notes=[noted(1, "b1")], history=[released(1, "unknown"), released(2, "unknown")])
    assert pending_batch(bound) == PendingBatch("b1", AT)
    refused = document(notes=[noted(1, "b1")], history=[released(1, "unknown"), released(2, "no")])
    assert pending_batch(refused) is None
    # A crash after the note: no release at all, still bound.
    assert pending_batch(document(notes=[noted(1, "b1")])) == PendingBatch("b1", AT)


def test_the_latest_batch_binds_and_an_earlier_refusal_does_not_settle_it() -> None:
    doc = document(
        notes=[noted(1, "b1"), noted(3, "b3")],
        history=[released(1, "no"), released(2, "no"), released(3, "unknown")],
    )
    assert pending_batch(doc) == PendingBatch("b3", AT)
