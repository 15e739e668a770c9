"""Ids chosen by producers: job ids (the idempotency key) and user ids.

Both are 1-128 characters of letters, digits and `._:-`, so that they are safe as
store keys, Kafka keys, file names and header values.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_ID = re.compile(ID_PATTERN)

JobId = Annotated[str, Field(pattern=ID_PATTERN)]
"""A producer-chosen job id; the idempotency key of the job."""
UserId = Annotated[str, Field(pattern=ID_PATTERN)]
"""A producer-chosen user id; the same rules as a job id."""


def is_job_id(value: str) -> bool:
    """Whether `value` is a valid job id (or user id), for data not validated by a model."""
    # fullmatch: with `match`, `$` would also accept a trailing newline.
    return _ID.fullmatch(value) is not None
