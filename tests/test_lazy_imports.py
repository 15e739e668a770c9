"""LangChain and the OpenAI SDK load only when a model is configured.

They cost about 0.8 s and 42 MiB to import. A service that only publishes jobs
(`streams.producer`), the CLI and an email-only worker (no `OPENAI_MODEL`) never need
them. Each check runs in a fresh interpreter: this test process has imported them already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("langchain", "langchain_core", "langchain_openai", "langsmith", "openai")

PROBE = """
import json, sys
{body}
heavy = sorted(name for name in sys.modules if name.split(".")[0] in {heavy!r})
print(json.dumps(heavy))
"""

BUILD_APP = """
import streams.app
from streams.settings import load_settings
streams.app.create_app(load_settings())
"""


def heavy_modules_after(body: str, tmp_path: Path, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PYTHON"))}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body, heavy=HEAVY)],
        cwd=REPO_ROOT,
        env={**clean, "OUTBOX_DIR": str(tmp_path / "outbox"), "LOG_LEVEL": "WARNING", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    heavy: list[str] = json.loads(completed.stdout.splitlines()[-1])
    return heavy


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("import streams.producer", id="producer"),
        pytest.param("import streams.cli", id="cli"),
        pytest.param(BUILD_APP, id="worker-without-model"),
        pytest.param("import processors.ads, processors.email", id="processors"),
    ],
)
def test_nothing_without_a_model_imports_langchain_or_openai(body: str, tmp_path: Path) -> None:
    assert heavy_modules_after(body, tmp_path) == []


def test_a_configured_model_loads_them_when_the_worker_is_built(tmp_path: Path) -> None:
    # The control: the probe does see them once the generator is built.
    heavy = heavy_modules_after(BUILD_APP, tmp_path, OPENAI_MODEL="gpt-4o-mini", OPENAI_API_KEY="sk-test")

    assert "langchain_openai" in heavy
    assert "openai" in heavy
