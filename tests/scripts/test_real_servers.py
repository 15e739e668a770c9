"""The readiness checks and `services.sh status` against the real servers (`make services`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from scripts.devservices.readiness import kafka_readiness, mongo_readiness
from scripts.devservices.waiting import Outcome, wait_until_ready

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


async def test_the_broker_is_ready() -> None:
    result = await kafka_readiness(KAFKA, 10.0)

    assert result.ready, result.detail
    assert "broker(s)" in result.detail


async def test_the_store_is_ready() -> None:
    result = await mongo_readiness(MONGODB_URL, 10.0)

    assert result.ready, result.detail
    assert result.detail == "ping ok"


async def test_waiting_for_a_running_server_takes_one_attempt() -> None:
    result = await wait_until_ready(lambda timeout_s: kafka_readiness(KAFKA, timeout_s), timeout_s=30)

    assert (result.outcome, result.attempts) == (Outcome.READY, 1)


def test_services_status_reports_both_up() -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/services.sh"), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["kafka", "ferretdb"]
    assert all(" up at " in line for line in lines), lines
