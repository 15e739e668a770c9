"""The command line and scripts/services.sh, with no server behind the ports they look at."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.scripts.ports import closed_port, hanging_up_server

ROOT = Path(__file__).resolve().parents[2]
SERVICES_SH = ROOT / "scripts/services.sh"


def devservices(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.devservices", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def isolated_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """services.sh on its own state dir and free ports, blind to any configured server."""
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URL")}
    env.update(
        SERVICES_DIR=str(tmp_path / "services"),
        SERVICES_PYTHON=sys.executable,
        KAFKA_PORT=str(closed_port()),
        KAFKA_CONTROLLER_PORT=str(closed_port()),
        MONGO_PORT=str(closed_port()),
    )
    env.update(overrides)
    return env


def test_check_on_a_closed_port_fails_fast_with_the_reason() -> None:
    port = closed_port()
    start_s = time.monotonic()

    done = devservices("check", "mongo", f"mongodb://127.0.0.1:{port}")

    assert time.monotonic() - start_s < 5
    assert done.returncode == 1
    assert (
        done.stderr.strip() == f"mongo: not ready: nothing listens at 127.0.0.1:{port} (connection refused)"
    )


def test_check_without_an_address_reads_the_usual_variable() -> None:
    port = closed_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}

    done = devservices("check", "kafka", env=env)

    assert done.returncode == 1
    assert f"nothing listens at 127.0.0.1:{port}" in done.stderr


def test_check_without_any_address_is_a_usage_error() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}

    done = devservices("check", "kafka", env=env)

    assert done.returncode == 2
    assert "no address given for kafka and $KAFKA_BOOTSTRAP_SERVERS is not set" in done.stderr


def test_wait_gives_up_at_the_deadline_and_shows_the_log(tmp_path: Path) -> None:
    log = tmp_path / "kafka.log"
    log.write_text("".join(f"line {n}\n" for n in range(100)))

    done = devservices(
        "wait", "kafka", f"127.0.0.1:{closed_port()}", "--timeout-s", "0.5", "--log", str(log), "--pid", "1"
    )

    assert done.returncode == 1
    assert "line 69\n" not in done.stderr
    assert "line 70\nline 71\n" in done.stderr  # the last 30 lines
    assert "ERROR: kafka did not answer within 0.5s (pid 1 still running); last check: nothing listens" in (
        done.stderr
    )


def test_wait_stops_at_once_when_the_process_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    url = f"mongodb://127.0.0.1:{closed_port()}"

    start_s = time.monotonic()
    done = devservices(
        "wait", "mongo", url, "--name", "ferretdb", "--pid", str(child.pid), "--timeout-s", "60"
    )

    assert time.monotonic() - start_s < 10  # not the 60 s deadline
    assert done.returncode == 3
    assert f"ERROR: ferretdb (pid {child.pid}) exited during start-up" in done.stderr


def test_render_config_refuses_a_template_it_cannot_fill(tmp_path: Path) -> None:
    template = tmp_path / "t.properties"
    template.write_text("port=@PORT@\n")

    done = devservices("render-config", str(template), str(tmp_path / "out"), "PROT=1")

    assert done.returncode == 1
    assert "no value for PORT" in done.stderr
    assert not (tmp_path / "out").exists()


def test_status_with_nothing_running_says_down_for_both(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)

    done = subprocess.run(
        ["bash", str(SERVICES_SH), "status"], env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"kafka:    down: nothing listens at 127.0.0.1:{env['KAFKA_PORT']} (connection refused)",
        f"ferretdb: down: nothing listens at 127.0.0.1:{env['MONGO_PORT']} (connection refused)",
    ]


def test_down_with_nothing_started_is_fine(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(SERVICES_SH), "down"],
        env=isolated_env(tmp_path, SERVICES_PYTHON="/nonexistent/python"),  # down needs no venv
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "kafka: not running" in done.stdout
    assert "ferretdb: not running" in done.stdout


def test_up_without_the_virtualenv_says_how_to_make_it(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(SERVICES_SH), "up"],
        env=isolated_env(tmp_path, SERVICES_PYTHON="/nonexistent/python"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 1
    assert "run 'make venv'" in done.stderr


async def test_up_refuses_a_kafka_port_held_by_something_else(tmp_path: Path) -> None:
    async with hanging_up_server() as port:
        # The controller port is taken too: a wrong turn past the check stops there, starting nothing.
        env = isolated_env(tmp_path, KAFKA_PORT=str(port), KAFKA_CONTROLLER_PORT=str(port))
        process = await asyncio.create_subprocess_exec(
            "bash",
            str(SERVICES_SH),
            "up",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            _, stderr = await process.communicate()

    assert process.returncode == 1
    assert (
        f"kafka: port {port} is taken by something that does not answer as a kafka server" in stderr.decode()
    )
    assert not (tmp_path / "services/run/kafka.pid").exists()
