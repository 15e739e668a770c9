"""Classifying OpenAI's failures as transient or permanent, where they are raised.

Messages name the status and OpenAI's error code only: OpenAI's own messages can
quote a masked API key or the prompt.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import openai
from langchain_core.exceptions import ModelRefusalError

from processors.errors import JobError, PermanentError, TransientError

_PERMANENT_STATUS = {
    400: "BadRequest",
    401: "AuthenticationFailed",
    403: "PermissionDenied",
    404: "ModelNotFound",
    422: "UnprocessableRequest",
}
# The SDK's own retry rule: these statuses can succeed on a second try.
_TRANSIENT_STATUS = {408: "RequestTimeout", 409: "Conflict", 429: "RateLimited"}


def retry_after_ms(headers: Mapping[str, str], *, now_s: float | None = None) -> int | None:
    """The provider's requested delay, from `retry-after-ms` or `retry-after` (seconds or a date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0, int(float(raw_ms)))
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0, int(float(raw) * 1000))
    except ValueError:
        pass
    try:
        at = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    now = time.time() if now_s is None else now_s
    return max(0, int((at.timestamp() - now) * 1000))


def classify(error: BaseException) -> JobError | None:
    """The job error for a failure of the OpenAI call, or None if it is not one."""
    if isinstance(error, openai.LengthFinishReasonError):
        return PermanentError("the answer hit the output token limit", error_class="LengthLimit")
    if isinstance(error, openai.ContentFilterFinishReasonError):
        return PermanentError("the answer was stopped by the content filter", error_class="Refusal")
    if isinstance(error, ModelRefusalError):
        return PermanentError("the model refused the request", error_class="Refusal")
    if isinstance(error, openai.APITimeoutError):
        return TransientError("OpenAI did not answer in time", error_class="Timeout")
    if isinstance(error, openai.APIConnectionError):
        return TransientError("could not reach OpenAI", error_class="ConnectionFailed")
    if isinstance(error, openai.APIStatusError):
        return _classify_status(error)
    if isinstance(error, openai.APIError):  # e.g. a response that is not the documented shape
        return TransientError("OpenAI sent an unexpected response", error_class="InvalidResponse")
    return None


def _classify_status(error: openai.APIStatusError) -> JobError:
    status = error.status_code
    code = (error.code or "")[:60]
    message = f"OpenAI answered {status}" + (f" ({code})" if code else "")
    if status == 429 and code == "insufficient_quota":
        # Out of credit: waiting minutes will not pay the bill.
        return PermanentError(message, error_class="QuotaExceeded")
    if status in _TRANSIENT_STATUS:
        delay_ms = retry_after_ms(error.response.headers) if status == 429 else None
        return TransientError(message, error_class=_TRANSIENT_STATUS[status], retry_after_ms=delay_ms)
    if status >= 500:
        return TransientError(message, error_class="ServerError")
    return PermanentError(message, error_class=_PERMANENT_STATUS.get(status, "ClientError"))
