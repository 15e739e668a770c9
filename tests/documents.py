"""Looking inside stored documents from tests."""

from __future__ import annotations


def texts(value: object) -> list[str]:
    """Every key and string value in a document, nested ones included.

    Search these, not `repr(document)`: a datetime's microseconds can read like an OTP code.
    """
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (str(k), *texts(v))]
    if isinstance(value, list):
        return [t for item in value for t in texts(item)]
    return []
