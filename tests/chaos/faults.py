"""What the provider, worker, store and partition chaos tests share: quick retries, ad jobs
and their results, and what the fake Resend saw in a stretch of time."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from typing import Any

from processors.ads.jobs import AdJob
from streams.dlq import read_dead_letters
from tests.chaos.cluster import Cluster
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.resend_server import FakeResend

FAST_EMAIL_RETRIES = {
    # Backoff small enough that a retried job is back within a second or two: the tests
    # measure recovery, not the production backoff (1 s base, doubling, 10 min cap).
    "EMAIL_RETRY_BASE_MS": "100",
    "EMAIL_RETRY_MULTIPLIER": "2",
    "EMAIL_RETRY_CAP_MS": "1000",
}
FAST_AD_RETRIES = {"AD_RETRY_BASE_MS": "100", "AD_RETRY_MULTIPLIER": "2", "AD_RETRY_CAP_MS": "1000"}


def model_env(fake_openai: FakeOpenAI) -> dict[str, str]:
    """The worker's settings for the fake model server."""
    return {
        "OPENAI_API_KEY": "sk-chaos-key",
        "OPENAI_BASE_URL": fake_openai.url,
        "OPENAI_MODEL": fake_openai.model,
        "OPENAI_TIMEOUT_S": "5",
        "AD_LEASE_S": "30",  # longer than the generator's worst case (3 x OPENAI_TIMEOUT_S)
        **FAST_AD_RETRIES,
    }


def ad_jobs(count: int, run_id: str) -> list[AdJob]:
    """`count` ad jobs, each for a product named after it (the fake model sees the name)."""
    return [
        AdJob.model_validate(
            {
                "job_id": f"{run_id}-ad-{i}",
                "user_id": f"u-{i % 7}",
                # "Lamp 1/<run>" is no part of "Lamp 11/<run>": the fake model's calls are told apart by name
                "product": {"name": f"Lamp {i}/{run_id}", "description": "A dimmable LED desk lamp."},
                "audience": "students who study late",
                "tone": "warm",
                "platform": "GOOGLE_SEARCH",
                "variants": 2,
                "notify": {"live": True},
            }
        )
        for i in range(count)
    ]


def model_calls_by_job(fake_openai: FakeOpenAI, jobs: list[AdJob]) -> dict[str, int]:
    """How many model calls named each job's product."""
    # Quoted, as the prompt's JSON data holds it: "Lamp x-1" must not match "Lamp x-10".
    by_name = {json.dumps(job.product.name): job.job_id for job in jobs}
    calls: Counter[str] = Counter()
    for request in fake_openai.requests:
        text = request.text()
        for name, job_id in by_name.items():
            if name in text:
                calls[job_id] += 1
    return {job.job_id: calls[job.job_id] for job in jobs}


async def ad_results(bootstrap_servers: str, topic: str) -> dict[str, list[str]]:
    """Every result now on `topic` (`ad-results`): the statuses published for each job id."""
    by_job: dict[str, list[str]] = defaultdict(list)
    for record in await read_dead_letters(bootstrap_servers, topic):
        result: dict[str, Any] = json.loads(record.record.value)
        by_job[str(result["job_id"])].append(str(result["status"]))
    return dict(by_job)


def sends_between(resend: FakeResend, from_s: float, to_s: float) -> int:
    """Emails the fake accepted with `from_s <= at < to_s` (epoch seconds)."""
    return sum(from_s <= delivery.at_s < to_s for delivery in resend.deliveries)


def last_send_s(resend: FakeResend) -> float:
    """When the fake accepted its latest email (epoch seconds; 0 if none)."""
    return max((delivery.at_s for delivery in resend.deliveries), default=0.0)


class Stopwatch:
    """Wall time since the test began, for the figures."""

    def __init__(self) -> None:
        self.started_s = time.time()

    @property
    def elapsed_s(self) -> float:
        return time.time() - self.started_s


def outside_the_partition(cluster: Cluster) -> str:
    """A bootstrap list on the brokers' inter-broker listeners, which `Cluster.cut()` leaves
    alone: their metadata names those listeners, so a client on them is never cut."""
    # scripts/services.sh: KAFKA_INTERNAL_PORT = the node's client port + 3.
    return ",".join(f"127.0.0.1:{node.port + 3}" for node in cluster.nodes)
