"""AI ad copy: contracts, platform limits, prompt, generator, store and service.

Nothing here knows about Kafka or FastStream.
"""

from processors.ads.generator import AdCopyGenerator, GeneratedCopy, TokenUsage, copy_violations
from processors.ads.jobs import AdCopySet, AdJob, AdResult, AdVariant, DocumentRef, Notify, Product
from processors.ads.platforms import LIMITS, Platform, PlatformLimits, limits_for
from processors.ads.prompt import AdPrompt, RenderedPrompt
from processors.ads.provider_errors import classify, retry_after_ms
from processors.ads.service import AdService, failed_result, result_from_document
from processors.ads.store import AdStore, Status
from processors.claims import Claim, ClaimOutcome

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
