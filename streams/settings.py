"""All configuration, from the environment, validated once at start."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=None,
        extra="ignore",
        hide_input_in_errors=True,
        # `RESEND_API_KEY=` (empty, as docker compose passes an unset variable) means unset.
        env_ignore_empty=True,
        case_sensitive=False,
    )

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_group_id: str = "worker"
    kafka_topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$", max_length=100)
    kafka_create_topics: bool = True
    kafka_topic_partitions: int = Field(default=3, ge=1, le=1000)
    kafka_replication_factor: int = Field(default=1, ge=1, le=10)
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")

    # Store
    mongodb_url: SecretStr = SecretStr("mongodb://127.0.0.1:27017")
    mongodb_database: str = "worker"
    mongodb_timeout_ms: int = Field(default=5_000, ge=100)

    # Email
    resend_api_key: SecretStr | None = None
    resend_api_url: str = "https://api.resend.com"
    resend_timeout_s: float = Field(default=10.0, gt=0, le=120)
    email_from: str = "Acme <no-reply@example.com>"
    product_name: str = Field(default="Acme", min_length=1, max_length=60)
    outbox_dir: Path = Path("outbox")
    templates_dir: Path = REPO_ROOT / "templates"
    email_send_lease_s: float = Field(default=30.0, gt=0)
    max_job_bytes: int = Field(default=64 * 1024, ge=1024)

    # Retries (per job topic: EMAIL_RETRY_* and AD_RETRY_*)
    email_retry_max_attempts: int = Field(default=8, ge=1, le=100)
    email_retry_base_ms: int = Field(default=1_000, ge=1)
    email_retry_multiplier: float = Field(default=2.0, ge=1.0)
    email_retry_cap_ms: int = Field(default=10 * 60_000, ge=1)
    ad_retry_max_attempts: int = Field(default=5, ge=1, le=100)
    ad_retry_base_ms: int = Field(default=2_000, ge=1)
    ad_retry_multiplier: float = Field(default=3.0, ge=1.0)
    ad_retry_cap_ms: int = Field(default=15 * 60_000, ge=1)
    retry_buffer_max_records: int = Field(default=50_000, ge=1)
    retry_buffer_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    # AI ad copy
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str | None = None
    openai_timeout_s: float = Field(default=60.0, gt=0, le=600)
    openai_max_retries: int = Field(default=0, ge=0, le=3)
    ad_lease_s: float = Field(default=300.0, gt=0)

    # Liveness: the worker touches this file every few seconds (Docker healthcheck)
    heartbeat_file: Path | None = None

    # WebSocket notifier
    ws_token_secret: SecretStr | None = None
    ws_token_ttl_s: int = Field(default=3_600, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.email_send_lease_s <= self.resend_timeout_s:
            raise ValueError("EMAIL_SEND_LEASE_S must be longer than RESEND_TIMEOUT_S")
        return self

    @property
    def uses_outbox(self) -> bool:
        return self.resend_api_key is None


class SettingsError(SystemExit):
    """Raised with a one-line message naming the offending variables."""


def _one_line(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        name = "_".join(str(p) for p in item["loc"]).upper() or "settings"
        parts.append(f"{name}: {item['msg']}")
    return "invalid configuration: " + "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(_one_line(error)) from None
