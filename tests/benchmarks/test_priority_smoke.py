"""`make bench`'s priority run cannot rot: its --smoke mode, on the real servers, shows codes
going out ahead of a welcome backlog (300 welcomes in batches of 20, 5 codes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_codes_go_out_ahead_of_queued_welcomes(tmp_path: Path) -> None:
    # Given the real servers (make services), 300 welcomes queued on email-bulk, the worker
    # started, and the provider at 2 requests/s
    out = tmp_path / "priority"

    # When 5 codes are published once the welcomes flow
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.priority",
            "--smoke",
            "--scenarios",
            "bulk-lane",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    # Then every email was sent once, and every code while welcomes still waited, first in its call
    assert run.returncode == 0, f"stdout:\n{run.stdout[-6000:]}\nstderr:\n{run.stderr[-6000:]}"
    (lane,) = json.loads(out.with_suffix(".json").read_text())["outcomes"]
    assert lane["errors"] == []
    assert lane["codes_sent"] == lane["codes"] == 5
    assert lane["welcomes_sent"] == lane["welcomes"] == 300
    assert lane["welcomes_unsent_at_last_code"] > 0
    assert lane["codes_behind_welcomes"] == 0
    assert lane["max_s"] < 5.0
    assert lane["max_accepted_1s"] <= 2
    assert "| bulk-lane | worker |" in out.with_suffix(".md").read_text()
