"""The live notifier's settings: the worker's variable names, read only when asked."""

from __future__ import annotations

import pytest

from live.settings import LiveConfigError, load_settings

VARIABLES = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_TOPIC_PREFIX",
    "KAFKA_CREATE_TOPICS",
    "KAFKA_TOPIC_PARTITIONS",
    "KAFKA_REPLICATION_FACTOR",
    "WS_TOKEN_SECRET",
    "WS_TOKEN_TTL_S",
    "LOG_LEVEL",
)
SECRET = "settings-test-secret"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_need_only_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WS_TOKEN_SECRET", SECRET)

    settings = load_settings()

    assert settings.ws_token_secret.get_secret_value() == SECRET
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.results_topic == "ad-results"
    assert settings.kafka_create_topics is True
    assert (settings.kafka_topic_partitions, settings.kafka_replication_factor) == (3, 1)
    assert settings.ws_token_ttl_s == 3_600
    assert settings.log_level == "INFO"
    assert SECRET not in repr(settings)


def test_the_variables_the_worker_reads_configure_the_notifier(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
        "KAFKA_TOPIC_PREFIX": "staging.",
        "KAFKA_CREATE_TOPICS": "false",
        "KAFKA_TOPIC_PARTITIONS": "6",
        "KAFKA_REPLICATION_FACTOR": "3",
        "WS_TOKEN_SECRET": SECRET,
        "WS_TOKEN_TTL_S": "120",
        "LOG_LEVEL": "DEBUG",
    }.items():
        monkeypatch.setenv(name, value)

    settings = load_settings()

    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.results_topic == "staging.ad-results"
    assert settings.kafka_create_topics is False
    assert (settings.kafka_topic_partitions, settings.kafka_replication_factor) == (6, 3)
    assert settings.ws_token_ttl_s == 120
    assert settings.log_level == "DEBUG"


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WS_TOKEN_SECRET", "")
    monkeypatch.setenv("KAFKA_TOPIC_PARTITIONS", "")

    with pytest.raises(LiveConfigError) as caught:
        load_settings()

    assert str(caught.value) == "invalid configuration: WS_TOKEN_SECRET is not set"
    assert caught.value.code == "invalid configuration: WS_TOKEN_SECRET is not set"


def test_every_invalid_variable_is_named_on_one_line_and_no_value_is_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WS_TOKEN_SECRET", SECRET)
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", "no spaces/allowed")
    monkeypatch.setenv("LOG_LEVEL", "LOUD")

    with pytest.raises(LiveConfigError) as caught:
        load_settings()

    message = str(caught.value)
    assert message.startswith("invalid configuration: KAFKA_TOPIC_PREFIX: String should match pattern")
    assert "; LOG_LEVEL: String should match pattern" in message
    assert "\n" not in message
    for value in (SECRET, "no spaces/allowed", "LOUD"):
        assert value not in message


def test_the_live_notifier_connects_with_the_workers_kafka_security(monkeypatch: pytest.MonkeyPatch) -> None:
    from live.settings import kafka_client_options

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9094")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "live")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "pw-123")
    options = kafka_client_options()
    assert options["bootstrap_servers"] == "broker:9094"
    assert (options["security_protocol"], options["sasl_mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")
    assert options["sasl_plain_username"] == "live"


def test_incomplete_kafka_security_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from live.settings import LiveConfigError, kafka_client_options

    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "pw-123")
    with pytest.raises(LiveConfigError) as raised:
        kafka_client_options()
    assert "KAFKA_SASL_MECHANISM" in str(raised.value)
    assert "pw-123" not in str(raised.value)
