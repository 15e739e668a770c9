"""Job and user ids: one rule for models and for raw data."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from processors.ids import JobId, UserId, is_job_id

VALID = ["a", "otp-42", "ad.7f3c:2a_9e", "A" * 128]
INVALID = ["", "A" * 129, "job 1", "job/1", "job\n", "\njob", "jöb", "job$", "job\x00"]


@pytest.mark.parametrize("value", VALID)
def test_valid_ids_pass_everywhere(value: str) -> None:
    assert is_job_id(value)
    assert TypeAdapter(JobId).validate_python(value) == value
    assert TypeAdapter(UserId).validate_python(value) == value


@pytest.mark.parametrize("value", INVALID)
def test_invalid_ids_fail_everywhere(value: str) -> None:
    assert not is_job_id(value)
    with pytest.raises(ValidationError):
        TypeAdapter(JobId).validate_python(value)
    with pytest.raises(ValidationError):
        TypeAdapter(UserId).validate_python(value)
