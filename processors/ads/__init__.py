"""AI ad copy: contracts, platform limits, prompt, generator, store and service.

Nothing here knows about Kafka or FastStream. The generator and the provider-error
classifier need LangChain and the OpenAI SDK (about 0.8 s and 42 MiB to import),
so they load on first use: publishing an ad job, or running a worker with no model
configured, never imports them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from processors.ads.jobs import AdCopySet, AdJob, AdResult, AdVariant, DocumentRef, Notify, Product
from processors.ads.platforms import LIMITS, Platform, PlatformLimits, limits_for
from processors.ads.prompt import AdPrompt, RenderedPrompt
from processors.ads.service import AdService, failed_result, result_from_document
from processors.ads.store import AdStore, Status
from processors.claims import Claim, ClaimOutcome

if TYPE_CHECKING:
    from processors.ads.generator import AdCopyGenerator, GeneratedCopy, TokenUsage, copy_violations
    from processors.ads.provider_errors import classify, retry_after_ms

_LAZY = {
    "AdCopyGenerator": "processors.ads.generator",
    "GeneratedCopy": "processors.ads.generator",
    "TokenUsage": "processors.ads.generator",
    "copy_violations": "processors.ads.generator",
    "classify": "processors.ads.provider_errors",
    "retry_after_ms": "processors.ads.provider_errors",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "LIMITS",
    "AdCopyGenerator",
    "AdCopySet",
    "AdJob",
    "AdPrompt",
    "AdResult",
    "AdService",
    "AdStore",
    "AdVariant",
    "Claim",
    "ClaimOutcome",
    "DocumentRef",
    "GeneratedCopy",
    "Notify",
    "Platform",
    "PlatformLimits",
    "Product",
    "RenderedPrompt",
    "Status",
    "TokenUsage",
    "classify",
    "copy_violations",
    "failed_result",
    "limits_for",
    "result_from_document",
    "retry_after_ms",
]
