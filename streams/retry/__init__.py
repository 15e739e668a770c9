"""Non-blocking retries with backoff, and dead letters, for every job topic."""

from streams.retry.middleware import FailureRouting
from streams.retry.policy import BackoffPolicy, DeadLetter, RetryIn, plan_retry
from streams.retry.record import RawRecord
from streams.retry.routing import FailureRouter, JobRoute
from streams.retry.scheduler import RetryScheduler
from streams.retry.watermark import PartitionWatermark

__all__ = [
    "BackoffPolicy",
    "DeadLetter",
    "FailureRouter",
    "FailureRouting",
    "JobRoute",
    "PartitionWatermark",
    "RawRecord",
    "RetryIn",
    "RetryScheduler",
    "plan_retry",
]
