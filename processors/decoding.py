"""Turning raw message bytes into a validated job, or a `PoisonMessage` with a reason."""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from processors.errors import PoisonMessage

T = TypeVar("T")

log = logging.getLogger(__name__)


class UnknownFields:
    """Notes the fields of decoded jobs that their model does not know (a newer producer
    added them; they are ignored), and logs each type's new names once."""

    def __init__(self, max_names: int = 1_000) -> None:
        self._logged: set[tuple[str, str]] = set()
        self._max_names = max_names

    def check(self, data: Any, job: Any) -> list[str]:
        """The top-level fields of `data` that `job`'s model does not know; logs new ones."""
        if not isinstance(data, dict) or not isinstance(job, BaseModel):
            return []
        fields = type(job).model_fields
        known = set(fields) | {f.alias for f in fields.values() if f.alias}
        extra = sorted(str(name)[:60] for name in data if name not in known)
        kind = str(data.get("type") or type(job).__name__)[:40]
        new = [name for name in extra if (kind, name) not in self._logged]
        if new and len(self._logged) < self._max_names:
            self._logged.update((kind, name) for name in new)
            log.warning(
                "%s jobs carry fields this worker does not know, ignored: %s (a newer producer?)",
                kind,
                ", ".join(new),
            )
        return extra


def describe_validation_error(error: ValidationError) -> str:
    """What is wrong, without the input values: they may be OTP codes or tokens."""
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "message"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def json_object(raw: bytes | str) -> dict[str, Any] | None:
    """`raw` as a JSON object, or None: not UTF-8, not JSON, not an object, nested too
    deeply for the parser (`RecursionError`) or holding a number too long to read
    (`ValueError`). For code that only peeks at a record (a dead-letter hook, a metric
    label, the CLI) and must never fail on bad input."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return data if isinstance(data, dict) else None


def decode_job(
    raw: bytes,
    adapter: TypeAdapter[T],
    *,
    max_bytes: int,
    known_types: tuple[str, ...] = (),
    unknown: UnknownFields | None = None,
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
    except RecursionError:
        raise PoisonMessage("invalid-json", "payload is nested too deeply") from None
    except ValueError:
        # JSON the parser refuses to turn into Python: an integer of more digits than
        # `sys.get_int_max_str_digits()` (4300).
        raise PoisonMessage("invalid-json", "payload holds a number too long to read") from None
    if known_types and isinstance(data, dict) and "type" in data and data["type"] not in known_types:
        kind = str(data["type"])[:40]
        raise PoisonMessage("unknown-type", f"unknown job type {kind!r}")
    try:
        job = adapter.validate_python(data)
    except ValidationError as error:
        raise PoisonMessage("schema", describe_validation_error(error)) from None
    if unknown is not None:
        unknown.check(data, job)
    return job
