"""The worker over TLS + SASL (SCRAM-SHA-512), as managed clusters need, on the real broker.

`make services` opens a SASL_SSL listener (default 127.0.0.1:9094) with a CA and a SCRAM
user made at set-up; its password and CA sit in `.services/kafka/tls/`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from streams.producer import JobPublisher
from streams.security import client_kwargs
from streams.settings import REPO_ROOT, KafkaSettings
from streams.topics import TopicNames
from tests.fakes.resend_server import FakeResend
from tests.integration.jobs import mixed_job
from tests.polling import eventually

SASL_BOOTSTRAP = os.environ.get("KAFKA_SASL_SSL_BOOTSTRAP", "127.0.0.1:9094")
TLS_DIR = Path(os.environ.get("SERVICES_DIR", REPO_ROOT / ".services")) / "kafka" / "tls"


def sasl_env(password: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": SASL_BOOTSTRAP,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "worker",
        "KAFKA_SASL_PASSWORD": password,
        "KAFKA_SSL_CA_FILE": str(TLS_DIR / "ca.pem"),
    }


@pytest.fixture
def sasl_password(servers: dict[str, str]) -> str:
    path = TLS_DIR / "sasl-password"
    if not path.is_file():
        pytest.fail(f"{path} is missing: `make services` makes it with the SASL_SSL listener")
    return path.read_text().strip()


async def test_the_email_path_runs_over_sasl_ssl(
    start_worker: Any, topics: TopicNames, fake_resend: FakeResend, run_id: str, sasl_password: str
) -> None:
    env = sasl_env(sasl_password)
    start_worker(**env)
    kafka = KafkaSettings(**{k.removeprefix("KAFKA_").lower(): v for k, v in env.items()})
    jobs = [mixed_job(i, run_id) for i in range(20)]
    async with JobPublisher(SASL_BOOTSTRAP, topics, client_options=client_kwargs(kafka)) as publisher:
        for job in jobs:
            await publisher.email(job)
    await eventually(lambda: len(fake_resend.deliveries) >= len(jobs), timeout_s=60, what="20 deliveries")
    by_key = fake_resend.deliveries_by_key()
    assert {job.job_id for job in jobs} == set(by_key)
    assert all(len(deliveries) == 1 for deliveries in by_key.values())


def test_a_wrong_password_ends_the_start_with_one_clear_line_and_no_secret(
    worker_env: dict[str, str], sasl_password: str, tmp_path: Path
) -> None:
    wrong = "not-the-password-" + sasl_password[:4]
    env = {**os.environ, **worker_env, **sasl_env(wrong)}
    started_s = time.monotonic()
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("faststream")), "run", "streams.app:app"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO_ROOT), "HTTP_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert time.monotonic() - started_s < 30
    last_line = proc.stderr.strip().splitlines()[-1]
    assert last_line.startswith("worker: cannot connect to Kafka at KAFKA_BOOTSTRAP_SERVERS=")
    assert "SASL_SSL" in last_line
    assert "Traceback" not in output
    assert wrong not in output
    assert sasl_password not in output
