"""Turning raw message bytes into a validated job, or a `PoisonMessage` with a reason."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from processors.errors import PoisonMessage

T = TypeVar("T")


def describe_validation_error(error: ValidationError) -> str:
    """What is wrong, without the input values: they may be OTP codes or tokens."""
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "message"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def decode_job(
    raw: bytes,
    adapter: TypeAdapter[T],
    *,
    max_bytes: int,
    known_types: tuple[str, ...] = (),
) -> T:
    """Decode and validate one job.

    Reasons: `oversized`, `invalid-json`, `unknown-type`, `schema`.
    """
    if len(raw) > max_bytes:
        raise PoisonMessage("oversized", f"payload is {len(raw)} bytes, limit is {max_bytes}")
    try:
        data: Any = json.loads(raw)
    except UnicodeDecodeError:
        raise PoisonMessage("invalid-json", "payload is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise PoisonMessage("invalid-json", f"payload is not JSON: {error.msg}") from None
    if known_types and isinstance(data, dict) and "type" in data and data["type"] not in known_types:
        kind = str(data["type"])[:40]
        raise PoisonMessage("unknown-type", f"unknown job type {kind!r}")
    try:
        return adapter.validate_python(data)
    except ValidationError as error:
        raise PoisonMessage("schema", describe_validation_error(error)) from None
