"""The services the handlers call, built at start-up (`streams.app`) or by tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from processors.ads.jobs import AdJob, AdResult
from processors.email.jobs import EmailJobModel


class EmailProcessor(Protocol):
    async def process(self, job: EmailJobModel) -> Any: ...


class AdProcessor(Protocol):
    async def process(self, job: AdJob) -> AdResult: ...


@dataclass
class Runtime:
    email: EmailProcessor | None = None
    ads: AdProcessor | None = None

    def email_processor(self) -> EmailProcessor:
        if self.email is None:
            raise RuntimeError("the email processor is not configured (the worker has not started)")
        return self.email

    def ad_processor(self) -> AdProcessor:
        if self.ads is None:
            raise RuntimeError("the ad processor is not configured (the worker has not started)")
        return self.ads


runtime = Runtime()
