"""Apps built for tests: `create_app` with recording processors and a topic prefix."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from processors.ads.jobs import AdJob, AdResult
from processors.ads.service import failed_result
from processors.email.jobs import EmailJobModel
from processors.errors import JobError
from streams.app import create_app
from streams.server import WorkerApp
from streams.services import Services
from streams.settings import KafkaSettings, Settings
from streams.topics import TopicNames


class RecordingEmail:
    def __init__(self) -> None:
        self.jobs: list[EmailJobModel] = []
        self.published_at: list[datetime | None] = []
        self.fail_with: Exception | None = None

    async def process(self, job: EmailJobModel, *, published_at: datetime | None = None) -> None:
        self.jobs.append(job)
        self.published_at.append(published_at)
        if self.fail_with is not None:
            raise self.fail_with


class RecordingAds:
    def __init__(self) -> None:
        self.jobs: list[AdJob] = []
        self.fail_with: Exception | None = None

    async def process(self, job: AdJob, *, replay: str | None = None) -> AdResult:
        self.jobs.append(job)
        raise self.fail_with or RuntimeError("no result scripted")

    async def conclude(
        self, job: AdJob, error: JobError, reason: str, *, replay: str | None = None
    ) -> AdResult:
        return failed_result(job, error)


@dataclass
class Collected:
    """Records the test app wrote to one topic: (value, key, headers)."""

    records: list[tuple[bytes, bytes | None, dict[str, str]]] = field(default_factory=list)

    @property
    def headers(self) -> list[dict[str, str]]:
        return [headers for _, _, headers in self.records]


@dataclass
class AppUnderTest:
    app: WorkerApp
    topics: TopicNames
    email: RecordingEmail
    ads: RecordingAds

    @property
    def broker(self) -> KafkaBroker:
        broker = self.app.broker
        assert isinstance(broker, KafkaBroker)
        return broker

    def collect(self, topic: str) -> Collected:
        """Subscribe a collector to `topic` on this app's broker (call before `TestKafkaBroker`)."""
        collected = Collected()

        @self.broker.subscriber(topic, group_id=f"test-collector-{topic}")
        async def collect(message: KafkaMessage) -> None:
            raw = message.raw_message
            key = raw.key if isinstance(raw.key, bytes | None) else str(raw.key).encode()
            collected.records.append((message.body, key, dict(message.headers)))

        return collected


def build_test_app(prefix: str = "") -> AppUnderTest:
    email, ads = RecordingEmail(), RecordingAds()
    settings = Settings(kafka=KafkaSettings(topic_prefix=prefix))
    app = create_app(settings, Services(email=email, ads=ads))
    return AppUnderTest(app, TopicNames.with_prefix(prefix), email, ads)
