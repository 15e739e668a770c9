"""All configuration, from the environment, grouped by area and validated once at start.

Each group reads its own variables (`KAFKA_*`, `MONGODB_*`, `RESEND_*`, ...); the names
are the ones the README lists. Nothing here runs at import: `load_settings()` reads the
environment, and `get_settings()` caches that for the worker's entry points.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from processors.ads.cost import PricesSetting
from processors.templates import TEMPLATES_DIR
from streams.retry.policy import BackoffPolicy

REPO_ROOT = Path(__file__).resolve().parents[1]


def _group(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix,
        env_file=None,
        extra="ignore",
        hide_input_in_errors=True,
        # `RESEND_API_KEY=` (empty, as docker compose passes an unset variable) means unset.
        env_ignore_empty=True,
        case_sensitive=False,
        frozen=True,
    )


def _env(name: str) -> Any:
    """A field read from exactly the variable `name`, whatever the group's prefix."""
    return AliasChoices(name.lower(), name)


class KafkaSettings(BaseSettings):
    model_config = _group("KAFKA_")

    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "worker"
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$", max_length=100)
    create_topics: bool = True
    topic_partitions: int = Field(default=3, ge=1, le=1000)
    replication_factor: int = Field(default=1, ge=1, le=10)
    # Managed clusters (Confluent Cloud, MSK, Aiven, Redpanda Cloud) need TLS and SASL.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    ssl_key_password: SecretStr | None = None

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        sasl_incomplete = self.sasl_mechanism is None or not self.sasl_username or self.sasl_password is None
        if self.security_protocol.startswith("SASL_") and sasl_incomplete:
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs KAFKA_SASL_MECHANISM, "
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together")
        for path in (self.ssl_ca_file, self.ssl_cert_file, self.ssl_key_file):
            if path is not None and not path.is_file():
                raise ValueError(f"no such file: {path}")
        return self


class StoreSettings(BaseSettings):
    model_config = _group("MONGODB_")

    url: SecretStr = SecretStr("mongodb://127.0.0.1:27017")
    database: str = "worker"
    timeout_ms: int = Field(default=5_000, ge=100)


class ResendSettings(BaseSettings):
    model_config = _group("RESEND_")

    api_key: SecretStr | None = None
    api_url: str = "https://api.resend.com"
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    # The team's limit, shared by every worker process of the group (Resend: 2/s on
    # older plans, 5/s in today's docs; the account's own figure wins).
    rate_limit_per_s: float = Field(default=2.0, gt=0, le=10_000)
    # Emails per batch call while jobs wait for the budget; 1 sends each alone.
    batch_max: int = Field(default=100, ge=1, le=100)
    # The signing secret of the Resend webhook (`whsec_...`); unset: the endpoint answers 503.
    webhook_secret: SecretStr | None = None


class EmailSettings(BaseSettings):
    model_config = _group("EMAIL_")

    sender: str = Field(default="Acme <no-reply@example.com>", validation_alias=_env("EMAIL_FROM"))
    send_lease_s: float = Field(default=30.0, gt=0)
    product_name: str = Field(
        default="Acme", min_length=1, max_length=60, validation_alias=_env("PRODUCT_NAME")
    )
    outbox_dir: Path = Field(default=Path("outbox"), validation_alias=_env("OUTBOX_DIR"))
    # Email jobs in flight at once per process: each mostly waits on the provider. By
    # Little's law the rate is at most this / the time a job takes: 128 at 200 ms allows
    # 640/s, above what the stack does on 2 cores (64 allowed 320/s, and reached 0.65x the
    # instant-provider rate); and 128 fills batches of 100 while jobs wait for the budget.
    concurrency: int = Field(default=128, ge=1, le=1024)
    # The same, for bulk mail (`email-bulk`: WELCOME_EMAIL, AD_READY).
    bulk_concurrency: int = Field(default=128, ge=1, le=1024)
    # Dead letters (and retries) of email hold codes and links: Kafka deletes them after this.
    dlq_retention_hours: int = Field(
        default=72, ge=1, le=24 * 365, validation_alias=_env("DLQ_RETENTION_HOURS")
    )
    # Ledger, delivery events and ads documents older than this are purged.
    ledger_retention_days: int = Field(
        default=30, ge=1, le=3650, validation_alias=_env("LEDGER_RETENTION_DAYS")
    )
    # How often each worker re-reads the suppression list (other workers' additions).
    suppression_refresh_s: float = Field(default=30.0, gt=0, le=3600)


class BackoffSettings(BaseSettings):
    """`<TOPIC>_RETRY_MAX_ATTEMPTS`, `_BASE_MS`, `_MULTIPLIER`, `_CAP_MS` for one job topic."""

    max_attempts: int = Field(default=8, ge=1, le=100)
    base_ms: int = Field(default=1_000, ge=1)
    multiplier: float = Field(default=2.0, ge=1.0)
    cap_ms: int = Field(default=10 * 60_000, ge=1)

    def policy(self) -> BackoffPolicy:
        return BackoffPolicy(
            max_attempts=self.max_attempts,
            base_ms=self.base_ms,
            multiplier=self.multiplier,
            cap_ms=self.cap_ms,
        )


class EmailBackoffSettings(BackoffSettings):
    model_config = _group("EMAIL_RETRY_")


class AdBackoffSettings(BackoffSettings):
    model_config = _group("AD_RETRY_")

    max_attempts: int = Field(default=5, ge=1, le=100)
    base_ms: int = Field(default=2_000, ge=1)
    multiplier: float = Field(default=3.0, ge=1.0)
    cap_ms: int = Field(default=15 * 60_000, ge=1)


class NotifierBackoffSettings(BackoffSettings):
    model_config = _group("NOTIFIER_RETRY_")

    max_attempts: int = Field(default=8, ge=1, le=100)


class RetryBufferSettings(BaseSettings):
    model_config = _group("RETRY_BUFFER_")

    max_records: int = Field(default=50_000, ge=1)
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)


class OpenAISettings(BaseSettings):
    model_config = _group("OPENAI_")

    api_key: SecretStr | None = None
    base_url: str | None = None
    model: str | None = None
    timeout_s: float = Field(default=60.0, gt=0, le=600)
    max_retries: int = Field(default=0, ge=0, le=3)
    # The account's requests and tokens per minute, shared by every process of the ad
    # consumer group (processors/ads/budget.py); 0: no limit.
    rpm: int = Field(default=0, ge=0, le=10_000_000)
    tpm: int = Field(default=0, ge=0, le=10_000_000_000)
    # USD per million tokens by model, for `ads cost` (JSON; see processors/ads/cost.py).
    prices: Annotated[PricesSetting, NoDecode] = Field(default_factory=dict)


class AdSettings(BaseSettings):
    model_config = _group("AD_")

    lease_s: float = Field(default=300.0, gt=0)
    # Ad jobs in flight at once per process: model calls take seconds and cost money.
    concurrency: int = Field(default=8, ge=1, le=256)


class ConsumerSettings(BaseSettings):
    """Records fetched but not started, per job subscriber, and how often offsets are committed."""

    model_config = _group("CONSUMER_")

    max_buffered_records: int = Field(default=1_000, ge=1)
    max_buffered_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    commit_interval_ms: int = Field(default=500, ge=10, le=60_000)


class WorkerSettings(BaseSettings):
    model_config = _group("")

    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    # `text`: one readable line per record; `json`: one object per line, for log shippers.
    log_format: Literal["text", "json"] = "text"
    max_job_bytes: int = Field(default=64 * 1024, ge=1024)
    templates_dir: Path = TEMPLATES_DIR
    # On SIGTERM, how long in-flight jobs may finish before they are cut off (and their
    # claims released). Keep the platform's stop timeout above it (Docker's default is 10 s).
    shutdown_grace_s: float = Field(default=20.0, gt=0, le=600)
    # The worker's HTTP server (Resend webhook, /healthz, /readyz, /metrics): `HTTP_HOST`,
    # `HTTP_PORT` (0: no HTTP server, so several workers can share a host).
    http_host: str = "0.0.0.0"  # noqa: S104 - a container's port is published by choice
    http_port: int = Field(default=8080, ge=0, le=65535)


class LiveSettings(BaseSettings):
    model_config = _group("WS_")

    token_secret: SecretStr | None = None
    token_ttl_s: int = Field(default=3_600, ge=1)


class Settings(BaseModel):
    """The worker's whole configuration; each group reads its variables when built."""

    model_config = ConfigDict(frozen=True)

    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    resend: ResendSettings = Field(default_factory=ResendSettings)
    email: EmailSettings = Field(default_factory=EmailSettings)
    email_retry: EmailBackoffSettings = Field(default_factory=EmailBackoffSettings)
    ad_retry: AdBackoffSettings = Field(default_factory=AdBackoffSettings)
    notifier_retry: NotifierBackoffSettings = Field(default_factory=NotifierBackoffSettings)
    retry_buffer: RetryBufferSettings = Field(default_factory=RetryBufferSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    ads: AdSettings = Field(default_factory=AdSettings)
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)
    live: LiveSettings = Field(default_factory=LiveSettings)

    GROUPS: ClassVar[tuple[str, ...]] = (
        "worker",
        "kafka",
        "store",
        "resend",
        "email",
        "email_retry",
        "ad_retry",
        "notifier_retry",
        "retry_buffer",
        "openai",
        "ads",
        "consumer",
        "live",
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.email.send_lease_s <= self.resend.timeout_s:
            raise ValueError("EMAIL_SEND_LEASE_S must be longer than RESEND_TIMEOUT_S")
        return self

    @property
    def uses_outbox(self) -> bool:
        return self.resend.api_key is None


class SettingsError(SystemExit):
    """Raised with a one-line message naming the offending variables."""


def _env_name(group: type[BaseSettings], field: str) -> str:
    info = group.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[-1]).upper()
    return (str(group.model_config.get("env_prefix", "")) + field).upper()


def describe_problems(group: type[BaseSettings], error: ValidationError) -> list[str]:
    """One `VARIABLE: problem` per error, never the value."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        field = str(item["loc"][0]) if item["loc"] else ""
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{_env_name(group, field)}: {message}" if field else message)
    return parts


def load_settings() -> Settings:
    """Read the environment; a `SettingsError` names every invalid variable on one line."""
    groups: dict[str, BaseSettings] = {}
    problems: list[str] = []
    for name in Settings.GROUPS:
        group_type: type[BaseSettings] = Settings.model_fields[name].annotation  # type: ignore[assignment]
        try:
            groups[name] = group_type()
        except ValidationError as error:
            problems.extend(describe_problems(group_type, error))
    if problems:
        raise SettingsError("invalid configuration: " + "; ".join(problems))
    try:
        return Settings(**groups)
    except ValidationError as error:
        messages = [str(item["msg"]).removeprefix("Value error, ") for item in error.errors()]
        raise SettingsError("invalid configuration: " + "; ".join(messages)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once (entry points only; code takes `Settings` as an argument)."""
    return load_settings()
