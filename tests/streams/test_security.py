"""Kafka client security from settings: one source for the broker and every raw client."""

from __future__ import annotations

from pathlib import Path

import pytest
from faststream.security import SASLScram512

from streams.security import client_kwargs, kafka_security
from streams.settings import KafkaSettings, SettingsError, load_settings


def test_plaintext_needs_nothing() -> None:
    kafka = KafkaSettings(bootstrap_servers="b:9092")
    assert kafka_security(kafka) is None
    assert client_kwargs(kafka) == {"bootstrap_servers": "b:9092"}


def test_sasl_ssl_with_scram_gives_the_same_credentials_to_every_client() -> None:
    kafka = KafkaSettings(
        bootstrap_servers="b:9094",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="worker",
        sasl_password="s3cret-pw",  # type: ignore[arg-type]
    )
    security = kafka_security(kafka)
    assert isinstance(security, SASLScram512)
    assert security.use_ssl
    options = client_kwargs(kafka)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("worker", "s3cret-pw")
    assert options["ssl_context"] is not None


def test_sasl_without_credentials_is_one_clear_line_with_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cret-pw")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "KAFKA_SASL_MECHANISM" in message
    assert "\n" not in message
    assert "s3cret-pw" not in message


def test_a_missing_ca_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("KAFKA_SSL_CA_FILE", str(tmp_path / "nope.pem"))
    with pytest.raises(SettingsError, match=r"no such file: .*nope\.pem"):
        load_settings()


def test_an_unknown_protocol_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_TLS")
    with pytest.raises(SettingsError, match="KAFKA_SECURITY_PROTOCOL"):
        load_settings()
