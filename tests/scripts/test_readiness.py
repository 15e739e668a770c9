"""Readiness checks with no server behind them: quick, clear "not ready" answers, never exceptions."""

from __future__ import annotations

import time

import pytest

from scripts.devservices.readiness import Check, kafka_readiness, mongo_readiness, port_readiness
from scripts.devservices.waiting import Outcome, wait_until_ready
from tests.scripts.ports import closed_port, silent_server


@pytest.mark.parametrize(
    ("check", "address"),
    [
        (kafka_readiness, "127.0.0.1:{port}"),
        (mongo_readiness, "mongodb://127.0.0.1:{port}"),
        (port_readiness, "127.0.0.1:{port}"),
    ],
)
async def test_a_closed_port_is_not_ready_at_once_and_says_nothing_listens(
    check: Check, address: str
) -> None:
    port = closed_port()
    start_s = time.monotonic()

    result = await check(address.format(port=port), 10.0)

    assert time.monotonic() - start_s < 2  # not the 10 s timeout
    assert not result.ready
    assert result.detail == f"nothing listens at 127.0.0.1:{port} (connection refused)"


async def test_kafka_lists_every_bootstrap_server_that_refused() -> None:
    first, second = closed_port(), closed_port()

    result = await kafka_readiness(f"127.0.0.1:{first},PLAINTEXT://127.0.0.1:{second}", 5.0)

    assert not result.ready
    assert f"127.0.0.1:{first}" in result.detail
    assert f"127.0.0.1:{second}" in result.detail


async def test_an_open_port_without_a_mongodb_server_is_not_ready_within_the_timeout() -> None:
    # A silent server, not one that hangs up: PyMongo 4.20 leaks its monitor's socket when
    # the peer closes the connection during the handshake (a ResourceWarning, an error here).
    async with silent_server() as port:
        start_s = time.monotonic()
        result = await mongo_readiness(f"mongodb://127.0.0.1:{port}", 1.0)

    assert time.monotonic() - start_s < 3
    assert not result.ready
    assert result.detail.startswith(f"127.0.0.1:{port}: no ping answer")


async def test_an_open_port_without_a_kafka_broker_is_not_ready_within_the_timeout() -> None:
    async with silent_server() as port:
        start_s = time.monotonic()
        result = await kafka_readiness(f"127.0.0.1:{port}", 1.0)

    assert time.monotonic() - start_s < 3
    assert not result.ready
    assert result.detail == f"127.0.0.1:{port}: no Kafka answer within 1s"


async def test_a_mongodb_url_with_a_password_never_shows_it() -> None:
    port = closed_port()
    result = await mongo_readiness(f"mongodb://worker:s3cret-pw@127.0.0.1:{port}/db", 2.0)
    invalid = await mongo_readiness("mongodb://worker:s3cret-pw@127.0.0.1:notaport/db", 2.0)

    assert not result.ready
    assert not invalid.ready
    assert "s3cret-pw" not in result.detail + invalid.detail
    assert invalid.detail == "not a valid MongoDB URL"


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:", ":9092", "127.0.0.1:port"])
async def test_port_check_refuses_what_is_not_host_and_port(address: str) -> None:
    result = await port_readiness(address, 1.0)

    assert not result.ready
    assert result.detail.startswith("not a HOST:PORT address")


async def test_waiting_on_a_closed_port_ends_at_the_deadline_with_the_reason() -> None:
    port = closed_port()
    start_s = time.monotonic()

    result = await wait_until_ready(
        lambda timeout_s: kafka_readiness(f"127.0.0.1:{port}", timeout_s), timeout_s=0.5, interval_s=0.1
    )

    assert result.outcome is Outcome.DEADLINE_PASSED
    assert 0.5 <= time.monotonic() - start_s < 2
    assert result.attempts > 1
    assert result.last.detail == f"nothing listens at 127.0.0.1:{port} (connection refused)"
