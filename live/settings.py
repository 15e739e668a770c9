"""The live notifier's configuration, from the same environment variables as the worker's.

Nothing is read at import: `load_settings()` reads the environment when the notifier starts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.security import client_kwargs
from streams.settings import KafkaSettings, describe_problems
from streams.topics import TopicNames


class LiveConfigError(SystemExit):
    """Invalid configuration, as one line that names the variables (never their values).

    A `SystemExit`: uncaught, it prints that line to stderr and exits with status 1.
    """


class LiveSettings(BaseSettings):
    # Field names are the variable names: `WS_TOKEN_SECRET` is `ws_token_secret`.
    model_config = SettingsConfigDict(
        env_file=None,
        extra="ignore",
        hide_input_in_errors=True,
        # An empty variable (docker compose passes unset ones as empty) counts as unset.
        env_ignore_empty=True,
        case_sensitive=False,
        frozen=True,
    )

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$", max_length=100)
    kafka_create_topics: bool = True
    kafka_topic_partitions: int = Field(default=3, ge=1, le=1000)
    kafka_replication_factor: int = Field(default=1, ge=1, le=10)
    ws_token_secret: SecretStr
    ws_token_ttl_s: int = Field(default=3_600, ge=1)
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: Literal["text", "json"] = "text"

    @property
    def results_topic(self) -> str:
        """`ad-results`, behind `KAFKA_TOPIC_PREFIX`."""
        return TopicNames.with_prefix(self.kafka_topic_prefix).ad_results


def load_settings() -> LiveSettings:
    """Read the environment, or raise `LiveConfigError` naming every invalid variable."""
    try:
        return LiveSettings()
    except ValidationError as error:
        raise LiveConfigError("invalid configuration: " + _describe(error)) from None


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_input=False, include_url=False, include_context=False):
        name = str(item["loc"][0]).upper() if item["loc"] else "settings"
        problems.append(f"{name} is not set" if item["type"] == "missing" else f"{name}: {item['msg']}")
    return "; ".join(problems)


def kafka_client_options() -> dict[str, Any]:
    """The Kafka clients' address and security (`KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*`,
    `KAFKA_SSL_*`), built as the worker builds them."""
    try:
        kafka = KafkaSettings()
    except ValidationError as error:
        raise LiveConfigError(
            "invalid configuration: " + "; ".join(describe_problems(KafkaSettings, error))
        ) from None
    return client_kwargs(kafka)
