"""The worker as users run it: `faststream run streams.app:app`, in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from streams.settings import REPO_ROOT

READY_LINE = "worker ready"


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, ready_timeout_s: float = 60.0) -> WorkerProcess:
        faststream = Path(sys.executable).with_name("faststream")
        log = self.log_path.open("ab")
        self._ready_mark = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [str(faststream), "run", "streams.app:app"],
            cwd=REPO_ROOT,
            # Any free port for the HTTP server, unless the test picks one: workers run side by side.
            env={**os.environ, "HTTP_PORT": "0", **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if READY_LINE in self.log_since_start():
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_since_start()}")
            time.sleep(0.05)
        raise AssertionError(f"worker not ready after {ready_timeout_s}s:\n{self.log_since_start()}")

    def log_since_start(self) -> str:
        with self.log_path.open("rb") as f:
            f.seek(self._ready_mark)
            return f.read().decode("utf-8", "replace")

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """`kill -9`: no shutdown hooks, no final commits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()


async def cli_process(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """`python -m streams.cli ARGS` as a user runs it: its exit status, stdout and stderr."""
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streams.cli",
        *args,
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


async def run_cli(*args: str, env: dict[str, str]) -> str:
    """`python -m streams.cli ARGS`; its stdout, or a failed assertion."""
    returncode, out, err = await cli_process(*args, env=env)
    assert returncode == 0, err
    return out
