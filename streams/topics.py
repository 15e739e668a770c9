"""Every Kafka topic name the worker uses, in one place.

`KAFKA_TOPIC_PREFIX` (default empty) is put in front of every name, so several
environments, or test runs, can share one cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.settings import get_settings

RETRY_SUFFIX = ".retry"
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class JobTopics:
    """A job topic and the retry and dead-letter topics that serve it."""

    main: str

    @property
    def retry(self) -> str:
        return self.main + RETRY_SUFFIX

    @property
    def dlq(self) -> str:
        return self.main + DLQ_SUFFIX

    @property
    def all(self) -> tuple[str, str, str]:
        return (self.main, self.retry, self.dlq)


@dataclass(frozen=True)
class TopicNames:
    email_jobs: JobTopics
    ad_jobs: JobTopics
    ad_results: str

    @classmethod
    def with_prefix(cls, prefix: str) -> TopicNames:
        return cls(
            email_jobs=JobTopics(f"{prefix}email-jobs"),
            ad_jobs=JobTopics(f"{prefix}ad-jobs"),
            ad_results=f"{prefix}ad-results",
        )

    @property
    def job_topics(self) -> tuple[JobTopics, ...]:
        return (self.email_jobs, self.ad_jobs)

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.email_jobs.all, *self.ad_jobs.all, self.ad_results)


TOPICS = TopicNames.with_prefix(get_settings().kafka_topic_prefix)
EMAIL_JOBS = TOPICS.email_jobs
AD_JOBS = TOPICS.ad_jobs
AD_RESULTS = TOPICS.ad_results
JOB_TOPICS = TOPICS.job_topics
ALL_TOPICS = TOPICS.all
