"""Where a failed record goes: the retry topic with a due time, or the dead-letter topic."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from processors.errors import JobError
from streams.retry import headers as h
from streams.retry.policy import BackoffPolicy, DeadLetter, RetryIn, plan_retry
from streams.retry.record import RawRecord
from streams.topics import JobTopics

log = logging.getLogger(__name__)

Publish = Callable[[bytes, bytes | None, dict[str, str]], Awaitable[None]]
"""`publish(value, key, headers)` to one topic: returns once the broker has acknowledged."""

OnDeadLetter = Callable[[RawRecord, JobError, str], Awaitable[None]]
"""Runs before the dead-letter record is written, so it must be idempotent: a failure of
either step reads the record again, and the hook runs again."""


@dataclass(frozen=True)
class JobRoute:
    """One consumed topic's failure handling: its policy and the publishers of its topics."""

    topics: JobTopics
    policy: BackoffPolicy
    retry: Publish
    dead_letter: Publish
    on_dead_letter: OnDeadLetter | None = None


class FailureRouter:
    """Sends failed records on; the caller commits the origin offset only after this returns."""

    def __init__(
        self,
        *,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._clock_ms = clock_ms
        self._jitter = jitter

    async def route(self, route: JobRoute, record: RawRecord, error: JobError) -> RetryIn | DeadLetter:
        history = h.FailureHistory.from_headers(record.headers)
        attempt = history.attempts + 1
        now_ms = self._clock_ms()
        plan = plan_retry(attempt, error, route.policy, self._jitter(), now_ms=now_ms)
        headers = h.carried_over(record.headers) | {
            h.PUBLISHED_AT_MS: str(h.published_at_ms(record.headers, record.timestamp_ms) or now_ms),
            h.ATTEMPT: str(attempt),
            h.ORIGIN_TOPIC: history.origin_topic or record.topic,
            h.ORIGIN_PARTITION: str(
                history.origin_partition if history.origin_partition is not None else record.partition
            ),
            h.ORIGIN_OFFSET: str(
                history.origin_offset if history.origin_offset is not None else record.offset
            ),
            h.FIRST_FAILURE_AT_MS: str(history.first_failure_at_ms or now_ms),
            h.LAST_FAILURE_AT_MS: str(now_ms),
            h.ERROR_CLASS: h.short_message(error.error_class),
            h.ERROR_MESSAGE: h.short_message(error.message),
        }
        if isinstance(plan, RetryIn):
            headers[h.DUE_AT_MS] = str(now_ms + plan.delay_ms)
            await route.retry(record.value, record.key, headers)
            log.warning(
                "job %s failed (%s, attempt %d); retry in %d ms",
                record,
                error.error_class,
                attempt,
                plan.delay_ms,
            )
            return plan
        headers[h.DLQ_REASON] = plan.reason
        if route.on_dead_letter is not None:
            # Before the dead letter: if the hook fails, the record is read again and
            # dead-lettered once, instead of twice.
            await route.on_dead_letter(record, error, plan.reason)
        await route.dead_letter(record.value, record.key, headers)
        log.error(
            "job %s dead-lettered: %s (%s, attempt %d): %s",
            record,
            plan.reason,
            error.error_class,
            attempt,
            h.short_message(error.message),
        )
        return plan
