"""The model's rate budget: OpenAI's requests and tokens per minute, shared by the group.

SEAM (pre-created for parallel work; the budget helper replaces `Unlimited`'s
neighbours with the real `ModelBudget`, the generator helper calls the protocol):

    ticket = await budget.acquire(prompt_chars=..., max_output_tokens=...)
    ... one model call ...
    ticket.settle(input_tokens=..., output_tokens=...)   # from the response's usage
    # or, on a 429 with retry-after:
    budget.pause(retry_after_s)                          # pauses this process's calls

`acquire` waits until this process's share of both budgets allows the call.
"""

from __future__ import annotations

from typing import Protocol


class Ticket(Protocol):
    def settle(self, *, input_tokens: int, output_tokens: int) -> None:
        """The call's real usage: corrects the estimate charged by `acquire`."""


class CallBudget(Protocol):
    async def acquire(self, *, prompt_chars: int, max_output_tokens: int) -> Ticket:
        """Wait until one more call, of about this size, fits this process's share."""

    def pause(self, retry_after_s: float) -> None:
        """The provider answered 429: no call from this process starts before then."""


class _NoTicket:
    def settle(self, *, input_tokens: int, output_tokens: int) -> None:
        return None


class Unlimited:
    """No budget: every call starts at once (no OPENAI_RPM/OPENAI_TPM configured)."""

    async def acquire(self, *, prompt_chars: int, max_output_tokens: int) -> Ticket:
        return _NoTicket()

    def pause(self, retry_after_s: float) -> None:
        return None
