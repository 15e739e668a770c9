"""`make bench` cannot rot: its --smoke mode runs on the real servers, both sides, in about a minute.

It starts the worker as users do (`faststream run streams.app:app`) and the baseline loop,
and checks exactly-once, no loss and per-key order at the fake provider; any failed check
makes the benchmark exit non-zero.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_smoke_run_writes_the_table_and_the_chart(tmp_path: Path) -> None:
    # Given the real servers (make services) and the smoke scenarios
    out = tmp_path / "throughput"

    # When the benchmark runs them
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.throughput", "--smoke", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    # Then every check passed and both results are written
    assert run.returncode == 0, f"stdout:\n{run.stdout[-6000:]}\nstderr:\n{run.stderr[-6000:]}"
    table = out.with_suffix(".md").read_text()
    for scenario in ("keys-0ms", "one-key-50ms-2p", "hangs-0ms", "history-0ms"):
        assert f"| {scenario} | worker |" in table
        assert f"| {scenario} | loop |" in table
    assert "Failed checks" not in table
    # The budget path: the worker alone, within the limit, each email once
    assert "| limited-2rps | worker |" in table
    assert "| limited-2rps | loop |" not in table
    limited = next(
        o for o in json.loads(out.with_suffix(".json").read_text())["outcomes"] if o["scenario"]["rate_limit"]
    )
    assert limited["max_accepted_1s"] <= limited["scenario"]["rate_limit"]
    assert (limited["duplicates"], limited["dead_letters"], limited["undelivered"]) == (0, 0, 0)
    assert "order held" in table
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    figures = json.loads(out.with_suffix(".json").read_text())
    assert all(o["errors"] == [] and o["rate"] for o in figures["outcomes"])
