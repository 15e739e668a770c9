"""The services the handlers call, built at start-up (`streams.app`) or by tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from processors.email.jobs import EmailJobModel


class EmailProcessor(Protocol):
    async def process(self, job: EmailJobModel) -> Any: ...


@dataclass
class Runtime:
    email: EmailProcessor | None = None

    def email_processor(self) -> EmailProcessor:
        if self.email is None:
            raise RuntimeError("the email processor is not configured (the worker has not started)")
        return self.email


runtime = Runtime()
