"""What `services.sh status` says about one server, given what answers where."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from scripts.devservices.cli import Service, service_status
from scripts.devservices.readiness import Readiness

LOCAL = "127.0.0.1:9092"
REFUSED = "nothing listens there (connection refused)"


def answering(*addresses: str) -> Callable[[str], Awaitable[Readiness]]:
    async def check(address: str) -> Readiness:
        if address in addresses:
            return Readiness(True, "ok")
        return Readiness(False, REFUSED)

    return check


async def test_the_scripts_own_server_that_answers_is_up_with_its_pid() -> None:
    service = Service("kafka", answering("127.0.0.1:19092"), LOCAL, pid=42, started_at="127.0.0.1:19092")

    assert await service_status(service) == (True, "up at 127.0.0.1:19092 (pid 42)")


async def test_the_scripts_own_server_that_does_not_answer_is_starting_or_unhealthy() -> None:
    service = Service("kafka", answering(), LOCAL, pid=42)

    ok, line = await service_status(service)

    assert not ok
    assert line == f"starting or unhealthy: pid 42 runs but {LOCAL} does not answer: {REFUSED}"


async def test_an_external_server_is_shown_by_its_label_not_its_url() -> None:
    url = "mongodb://worker:s3cret@db.example:27017"
    service = Service(
        "ferretdb", answering(url), "mongodb://127.0.0.1:27017", external=url, external_label="MONGODB_URL"
    )

    assert await service_status(service) == (True, "up at MONGODB_URL (external, not started by this script)")


async def test_an_external_address_that_does_not_answer_falls_back_to_the_local_port() -> None:
    service = Service("kafka", answering(LOCAL), LOCAL, external="broker.example:9092")

    assert await service_status(service) == (True, f"up at {LOCAL} (not started by this script)")


async def test_nothing_anywhere_is_down_with_the_reason() -> None:
    service = Service("kafka", answering(), LOCAL, external="broker.example:9092")

    assert await service_status(service) == (False, f"down: {REFUSED}")
