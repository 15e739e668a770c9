"""`pip install .` into a fresh venv outside the repository gives a working worker.

The venv is built once per session from a copy of what the image copies (pyproject.toml,
README.md, streams/, processors/, live/), with the runtime lock as constraints. Then, from
a directory outside the repository, the installed `faststream run streams.app:app` sends
an email that the installed `worker-cli` published: templates come from the package.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from streams.topics import TopicNames
from tests.integration.kafka_tools import check_kafka, delete_topics
from tests.polling import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")
SOURCES = ("pyproject.toml", "README.md", "streams", "processors", "live")
INSTALL_TIMEOUT_S = 900.0
READY_TIMEOUT_S = 60.0
READY_LINE = "worker ready"


@dataclass(frozen=True)
class Installed:
    venv: Path
    bin: Path
    seconds: float

    def run(self, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
        )


def canonical(pin: str) -> str:
    name, version = pin.split("==")
    return f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}"


def outside_env(**extra: str) -> dict[str, str]:
    """This process's environment, minus anything that would point Python at the repository."""
    drop = ("PYTHON", "VIRTUAL_ENV", "OPENAI_", "RESEND_", "KAFKA_", "MONGODB_", "TEMPLATES_DIR")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, "PYTHONUNBUFFERED": "1", "HTTP_PORT": "0", **extra}


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("package")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    venv = root / "venv"
    started_s = time.monotonic()
    # `venv` builds on the base interpreter: the new venv sees none of this venv's packages.
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--constraint",
            str(REPO_ROOT / "requirements.lock"),
            str(source),
        ],
        cwd=root,
        env=outside_env(),
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return Installed(venv=venv, bin=venv / "bin", seconds=time.monotonic() - started_s)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory that is not the repository and holds no sources."""
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    return workdir


@pytest.fixture
async def worker_env(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    await check_kafka(KAFKA)  # fails, never skips, without the servers (`make services`)
    run_id = uuid.uuid4().hex[:10]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "MONGODB_URL": MONGODB_URL,
        "KAFKA_TOPIC_PREFIX": f"p{run_id}.",
        "KAFKA_GROUP_ID": f"package-{run_id}",
        "MONGODB_DATABASE": f"test_{run_id}",
        "OUTBOX_DIR": str(tmp_path / "outbox"),
        "LOG_LEVEL": "INFO",
    }
    yield env
    await delete_topics(KAFKA, TopicNames.with_prefix(env["KAFKA_TOPIC_PREFIX"]).all)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGODB_URL)
    try:
        await client.drop_database(env["MONGODB_DATABASE"])
    finally:
        await client.close()


@pytest.fixture
def start_installed_worker(installed: Installed, outside: Path, tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []
    log_path = tmp_path / "worker.log"

    def start(env: dict[str, str]) -> None:
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(installed.bin / "faststream"), "run", "streams.app:app"],
                cwd=outside,
                env=outside_env(**env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(proc)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while READY_LINE not in log_path.read_text("utf-8", "replace"):
            if proc.poll() is not None:
                raise AssertionError(f"worker exited with {proc.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready after {READY_TIMEOUT_S}s:\n{log_path.read_text()}")
            time.sleep(0.05)

    yield start
    for proc in started:  # before the topics are deleted
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def test_the_install_imports_its_own_code_and_templates(installed: Installed, outside: Path) -> None:
    print(f"\nfresh venv with `pip install .` built in {installed.seconds:.1f}s")
    probe = (
        "import streams, processors.templates as t; "
        "print(streams.__file__); print(sorted(p.name for p in (t.TEMPLATES_DIR / 'email').iterdir()))"
    )
    completed = installed.run(str(installed.bin / "python"), "-c", probe, env=outside_env(), cwd=outside)

    assert completed.returncode == 0, completed.stderr
    module_path, templates = completed.stdout.splitlines()
    assert Path(module_path).is_relative_to(installed.venv)
    assert "SEND_OTP" in templates
    assert "base.html" in templates
    for script in ("worker-cli", "worker-live"):
        helped = installed.run(str(installed.bin / script), "--help", env=outside_env(), cwd=outside)
        assert helped.returncode == 0, helped.stderr


def test_the_runtime_lock_pins_everything_the_install_needs(installed: Installed, outside: Path) -> None:
    frozen = installed.run(
        str(installed.bin / "python"), "-m", "pip", "freeze", env=outside_env(), cwd=outside
    )

    assert frozen.returncode == 0, frozen.stderr
    installed_pins = {canonical(line) for line in frozen.stdout.splitlines() if "==" in line}
    lock = (REPO_ROOT / "requirements.lock").read_text().splitlines()
    locked_pins = {canonical(line) for line in lock if line and not line.startswith("#")}
    assert installed_pins == locked_pins
    assert any(line.startswith("kafka-job-worker @ file:") for line in frozen.stdout.splitlines())


async def test_the_installed_worker_sends_an_email_published_with_the_installed_cli(
    installed: Installed, outside: Path, worker_env: dict[str, str], start_installed_worker: Any
) -> None:
    start_installed_worker(worker_env)
    job_id = f"otp-package-{uuid.uuid4().hex[:8]}"

    published = installed.run(
        str(installed.bin / "worker-cli"),
        *("send-otp", "--to", "ada@example.com", "--code", "482913", "--job-id", job_id),
        env=outside_env(**worker_env),
        cwd=outside,
    )

    assert published.returncode == 0, published.stderr
    assert published.stdout.strip() == job_id
    eml = Path(worker_env["OUTBOX_DIR"]) / f"{job_id}.eml"
    await eventually(eml.is_file, timeout_s=60, what=f"{eml.name} in the outbox")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "Your Acme sign-in code"
    assert "482913" in eml.with_suffix(".html").read_text()
