"""`asyncapi.yaml` is generated from the code; it must not drift from it."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from streams.settings import REPO_ROOT


@functools.cache
def generated() -> str:
    """What `faststream docs gen --yaml streams.app:app` writes, in a clean process
    (tests in this process add subscribers to the app's broker)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "asyncapi.yaml"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "MONGODB_"))}
        subprocess.run(
            [
                str(Path(sys.executable).with_name("faststream")),
                "docs",
                "gen",
                "--yaml",
                "streams.app:app",
                "-o",
                str(out),
            ],
            cwd=REPO_ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        return out.read_text(encoding="utf-8")


def test_committed_asyncapi_matches_the_code() -> None:
    committed = (REPO_ROOT / "asyncapi.yaml").read_text(encoding="utf-8")
    assert committed == generated(), "asyncapi.yaml is stale: run `make asyncapi` and commit it"


def test_every_message_has_a_description_and_a_complete_example() -> None:
    document = yaml.safe_load(generated())
    assert document["info"]["title"] == "Kafka job worker"
    assert set(document["servers"]) == {"local", "production"}
    schemas = document["components"]["schemas"]
    for name in ("SendOtpJob", "WelcomeEmailJob", "VerificationLinkJob", "AdReadyJob", "AdJob", "AdResult"):
        schema = schemas[name]
        assert schema.get("description"), name
        assert schema.get("examples"), name
        for field, spec in schema["properties"].items():
            assert spec.get("description") or "$ref" in spec or "allOf" in spec, f"{name}.{field}"
