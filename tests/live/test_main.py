"""`python -m live` as users run it: configuration errors, serving, clean logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from websockets.asyncio.client import connect

from live.tokens import issue_token
from tests.live.conftest import ad_result
from tests.polling import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
SECRET = "main-test-secret-" + uuid.uuid4().hex


def base_env() -> dict[str, str]:
    # Only the broker's address is taken from the environment the tests run in.
    ours = ("WS_TOKEN_", "KAFKA_TOPIC_", "KAFKA_CREATE_TOPICS", "KAFKA_REPLICATION_FACTOR", "LOG_LEVEL")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(ours)}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_python(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )


def test_a_missing_secret_stops_start_up_with_one_clear_line() -> None:
    completed = run_python("-m", "live", "--port", "0", env=base_env())

    assert completed.returncode == 1
    assert completed.stderr.strip() == "invalid configuration: WS_TOKEN_SECRET is not set"


def test_invalid_values_are_named_on_one_line_without_the_values() -> None:
    env = {
        **base_env(),
        "WS_TOKEN_SECRET": SECRET,
        "WS_TOKEN_TTL_S": "forever",
        "KAFKA_TOPIC_PARTITIONS": "0",
    }

    completed = run_python("-m", "live", "--port", "0", env=env)

    assert completed.returncode == 1
    assert completed.stderr.strip() == (
        "invalid configuration: KAFKA_TOPIC_PARTITIONS: Input should be greater than or equal to 1; "
        "WS_TOKEN_TTL_S: Input should be a valid integer, unable to parse string as an integer"
    )


def test_importing_the_notifier_reads_no_settings_and_needs_none_of_the_workers() -> None:
    # Invalid and missing configuration: only building the app may read it.
    env = {**base_env(), "KAFKA_TOPIC_PARTITIONS": "0", "LOG_LEVEL": "LOUD"}
    script = (
        "import sys, live, live.app, live.__main__, live.settings\n"
        "shared = {'streams.admin', 'streams.topics', 'streams.security', 'streams.settings',"
        " 'streams.logformat', 'streams.retry', 'streams.retry.policy'}\n"
        "worker = sorted(m for m in sys.modules if m.startswith('streams.') and m not in shared)\n"
        "print(worker)"
    )

    completed = run_python("-c", script, env=env)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
async def drop_topics(kafka: str, prefix: str) -> AsyncIterator[None]:
    yield
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


@pytest.fixture
def served(kafka: str, prefix: str, drop_topics: None, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`python -m live` on a free port; yields its URL and its log file."""
    port = free_port()
    log_path = tmp_path / "notifier.log"
    env = {
        **base_env(),
        "WS_TOKEN_SECRET": SECRET,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "KAFKA_TOPIC_PREFIX": prefix,
    }
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "live", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}", log_path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert process.returncode in (0, -signal.SIGTERM), log_path.read_text()
    assert "Application shutdown complete." in log_path.read_text()


@pytest.mark.integration
async def test_python_m_live_serves_results_and_logs_no_token(
    kafka: str, prefix: str, served: tuple[str, Path]
) -> None:
    base_url, log_path = served

    async def healthy() -> bool:
        try:
            async with httpx.AsyncClient(base_url=base_url) as http:
                return (await http.get("/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(healthy, timeout_s=START_TIMEOUT_S, what="the notifier to answer /healthz")
    token = issue_token("user-a", SECRET, 600, time.time())
    async with httpx.AsyncClient(base_url=base_url) as http:
        assert (await http.get("/", params={"token": token})).status_code == 200

    producer = AIOKafkaProducer(bootstrap_servers=kafka)
    await producer.start()
    try:
        async with connect(base_url.replace("http", "ws") + f"/ws?token={token}") as alice:
            # The notifier created its topic (KAFKA_CREATE_TOPICS defaults to true) under the prefix.
            result = ad_result("user-a", "a-1")
            await producer.send_and_wait(f"{prefix}ad-results", json.dumps(result).encode(), key=b"user-a")
            async with asyncio.timeout(15):
                assert json.loads(await alice.recv()) == result
    finally:
        await producer.stop()

    logged = log_path.read_text()
    assert "token=[redacted]" in logged
    assert token not in logged
    assert token.split(".")[1] not in logged
