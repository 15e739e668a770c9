"""Shared fixtures: the fake Resend server, and the real servers for integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.resend_server import FakeResend


@pytest.fixture
def fake_resend() -> Iterator[FakeResend]:
    server = FakeResend().start()
    yield server
    server.stop()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()
