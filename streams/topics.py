"""Every Kafka topic name the worker uses, in one place.

`KAFKA_TOPIC_PREFIX` (default empty) is put in front of every name, so several
environments, or test runs, can share one cluster: `TopicNames.with_prefix(prefix)`.
"""

from __future__ import annotations

from dataclasses import dataclass

RETRY_SUFFIX = ".retry"
DLQ_SUFFIX = ".dlq"
EMAIL_NOTIFIER = "email-notifier"


@dataclass(frozen=True)
class JobTopics:
    """A consumed topic and the topics that serve its failures.

    `redeliver` is where a due retry goes back to. For a job topic it is the topic
    itself. A topic that others read too (`ad-results`) gets a topic private to its
    consumer group instead, so a retry reaches only the consumer that failed.
    """

    main: str
    stem: str = ""

    @property
    def _stem(self) -> str:
        return self.stem or self.main

    @property
    def redeliver(self) -> str:
        return self._stem

    @property
    def retry(self) -> str:
        return self._stem + RETRY_SUFFIX

    @property
    def dlq(self) -> str:
        return self._stem + DLQ_SUFFIX

    @property
    def consumed(self) -> tuple[str, ...]:
        """The topics the consumer reads: the main one, and its private redelivery topic."""
        return (self.main,) if self.redeliver == self.main else (self.main, self.redeliver)

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.consumed, self.retry, self.dlq)


@dataclass(frozen=True)
class TopicNames:
    email_jobs: JobTopics
    """Time-critical email: SEND_OTP, VERIFICATION_LINK (bulk types are moved to `email_bulk`)."""
    email_bulk: JobTopics
    """Bulk email: WELCOME_EMAIL, AD_READY. Its backlog never delays a code."""
    ad_jobs: JobTopics
    ad_results: str
    email_notifier: JobTopics
    email_events: str
    """Resend's delivery events (delivered, bounced, complained, delayed), for the product."""

    @classmethod
    def with_prefix(cls, prefix: str) -> TopicNames:
        ad_results = f"{prefix}ad-results"
        return cls(
            email_jobs=JobTopics(f"{prefix}email-jobs"),
            email_bulk=JobTopics(f"{prefix}email-bulk"),
            ad_jobs=JobTopics(f"{prefix}ad-jobs"),
            ad_results=ad_results,
            email_notifier=JobTopics(ad_results, stem=f"{ad_results}.{EMAIL_NOTIFIER}"),
            email_events=f"{prefix}email-events",
        )

    @property
    def job_topics(self) -> tuple[JobTopics, ...]:
        """Every consumed topic with retries and dead letters."""
        return (self.email_jobs, self.email_bulk, self.ad_jobs, self.email_notifier)

    @property
    def email_topics(self) -> tuple[JobTopics, ...]:
        """The topics whose records are emails, codes and links included."""
        return (self.email_jobs, self.email_bulk, self.email_notifier)

    @property
    def all(self) -> tuple[str, ...]:
        names = (*(name for t in self.job_topics for name in t.all), self.email_events)
        return tuple(dict.fromkeys(names))

    @property
    def dead_letter_topics(self) -> tuple[str, ...]:
        return tuple(t.dlq for t in self.job_topics)
