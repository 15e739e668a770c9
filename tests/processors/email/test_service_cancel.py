"""A job cut off by shutdown releases its claim, so the next owner sends it at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from processors.email.ledger import DeliveryLedger
from processors.email.senders import OutboxSender, OutgoingEmail
from tests.polling import eventually
from tests.processors.email.test_service import job, service

pytestmark = pytest.mark.integration


class HangingSender:
    name = "hanging"

    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def send(self, email: OutgoingEmail) -> str:
        self.called.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        return None


async def test_a_cancelled_send_releases_the_claim(ledger: DeliveryLedger, tmp_path: Path) -> None:
    sender = HangingSender()
    task = asyncio.create_task(service(ledger, sender).process(job("cut-1")))
    await asyncio.wait_for(sender.called.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def released() -> bool:
        entry = await ledger.get("cut-1")
        return entry is not None and entry["status"] == "retrying"

    await eventually(released, timeout_s=10, what="the claim to be released")
    # One second later, well within the 30 s lease that would otherwise hold it.
    outcome = await service(ledger, OutboxSender(tmp_path), clock_s=1).process(job("cut-1"))
    assert (outcome.already_sent, outcome.attempt) == (False, 2)
