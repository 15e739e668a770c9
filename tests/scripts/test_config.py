"""Rendering the Kafka server.properties template."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.devservices.config import TemplateError, render_properties, write_atomically

ROOT = Path(__file__).resolve().parents[2]


def test_replaces_every_token_on_setting_lines() -> None:
    template = "# comment\nlisteners=PLAINTEXT://127.0.0.1:@PORT@\nlog.dirs=@DIR@\n"

    rendered = render_properties(template, {"PORT": "19092", "DIR": "/tmp/a & b"})

    assert rendered == "# comment\nlisteners=PLAINTEXT://127.0.0.1:19092\nlog.dirs=/tmp/a & b\n"


def test_comments_may_mention_tokens_that_have_no_value() -> None:
    template = "# the @TOKENS@ are replaced; see @PORT@\nport=@PORT@\n"

    rendered = render_properties(template, {"PORT": "1"})

    assert rendered == "# the @TOKENS@ are replaced; see 1\nport=1\n"


def test_a_token_without_a_value_is_an_error() -> None:
    with pytest.raises(TemplateError, match="no value for DIR, PORT"):
        render_properties("a=@PORT@\nb=@DIR@\n", {})


def test_a_value_that_no_setting_uses_is_an_error() -> None:
    with pytest.raises(TemplateError, match="uses KAFKA_PROT"):
        render_properties("port=@KAFKA_PORT@\n", {"KAFKA_PORT": "1", "KAFKA_PROT": "2"})


def test_the_kafka_template_renders_completely(tmp_path: Path) -> None:
    template = (ROOT / "services/kafka/server.properties.template").read_text()
    values = {
        "KAFKA_PORT": "19092",
        "KAFKA_CONTROLLER_PORT": "19093",
        "KAFKA_SASL_PORT": "19094",
        "KAFKA_DATA_DIR": str(tmp_path),
        "KAFKA_TLS_DIR": str(tmp_path / "tls"),
    }

    rendered = render_properties(template, values)

    settings = [line for line in rendered.splitlines() if line and not line.startswith("#")]
    assert (
        "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093,SASL_SSL://127.0.0.1:19094"
        in settings
    )
    assert f"ssl.keystore.location={tmp_path / 'tls'}/broker.pem" in settings
    assert f"log.dirs={tmp_path}" in settings
    assert not any("@" in line for line in settings)


def test_writes_the_whole_file_or_nothing(tmp_path: Path) -> None:
    target = tmp_path / "server.properties"
    target.write_text("old\n")

    write_atomically(target, "new\n")

    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["server.properties"]
