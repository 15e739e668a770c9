"""Readiness checks and status reports for the local Kafka broker and FerretDB store.

`scripts/services.sh` starts and stops the processes; this package answers the questions
that need a client library: does the server answer yet, and how long do we wait for it.
It speaks Kafka through aiokafka and MongoDB through PyMongo, and knows nothing of the
worker (it never imports `streams` or reads its settings).

    .venv/bin/python -m scripts.devservices --help
"""

from scripts.devservices.readiness import (
    Readiness,
    kafka_readiness,
    mongo_readiness,
    port_readiness,
)
from scripts.devservices.waiting import Outcome, WaitResult, process_alive, wait_until_ready

__all__ = [
    "Outcome",
    "Readiness",
    "WaitResult",
    "kafka_readiness",
    "mongo_readiness",
    "port_readiness",
    "process_alive",
    "wait_until_ready",
]
