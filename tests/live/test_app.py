"""The notifier against the real broker: each user gets only their own results."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from contextlib import suppress
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from live.app import create_app
from live.tokens import issue_token
from tests.live.conftest import PARTITIONS, SECRET, Notifier, Results, ad_result, token_for
from tests.polling import eventually

pytestmark = pytest.mark.integration

RECEIVE_TIMEOUT_S = 15.0


async def receive(client: ClientConnection, count: int) -> list[dict[str, Any]]:
    received = []
    async with asyncio.timeout(RECEIVE_TIMEOUT_S):
        for _ in range(count):
            received.append(json.loads(await client.recv()))
    return received


async def close_of(client: ClientConnection) -> tuple[int, str]:
    """The code and reason the server closed `client` with."""
    with pytest.raises(ConnectionClosed) as caught:
        async with asyncio.timeout(RECEIVE_TIMEOUT_S):
            await client.recv()
    close = caught.value.rcvd
    assert close is not None, "the server did not send a close frame"
    return close.code, close.reason


async def drain(client: ClientConnection) -> tuple[int, tuple[int | None, str | None]]:
    """Read until the server closes `client`: how many messages came, and the close."""
    received = 0
    async with asyncio.timeout(RECEIVE_TIMEOUT_S):
        with suppress(ConnectionClosed):
            while True:
                await client.recv()
                received += 1
    return received, (client.close_code, client.close_reason)


async def health(notifier: Notifier) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=notifier.base_url) as http:
        response = await http.get("/healthz")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def health_when(notifier: Notifier, **expected: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = await health(notifier)
        return body if all(body[k] == v for k, v in expected.items()) else None

    return await eventually(check, timeout_s=RECEIVE_TIMEOUT_S, what=f"/healthz showing {expected}")


async def test_each_user_receives_only_their_own_results(notifier: Notifier, results: Results) -> None:
    async with (
        connect(notifier.ws_url(token_for("user-a"))) as alice,
        connect(notifier.ws_url(token_for("user-a"))) as alice_tab,
        connect(notifier.ws_url(token_for("user-b"))) as bob,
    ):
        published = [
            ad_result("user-a", "a-1"),
            ad_result("user-b", "b-1"),
            ad_result("user-a", "a-2", status="failed", variants=None, error="model refused"),
            ad_result("user-b", "b-2"),
        ]
        for result in published:
            await results.publish(result)

        # One partition, in order: had a result reached the wrong user, it would be among
        # the first two that user received.
        assert await receive(alice, 2) == [published[0], published[2]]
        assert await receive(alice_tab, 2) == [published[0], published[2]]
        assert await receive(bob, 2) == [published[1], published[3]]


async def test_results_keyed_by_user_arrive_from_every_partition(
    notifier: Notifier, results: Results
) -> None:
    async with connect(notifier.ws_url(token_for("user-a"))) as alice:
        jobs = [f"a-{n}" for n in range(PARTITIONS)]
        for partition, job_id in enumerate(jobs):
            await results.publish(ad_result("user-a", job_id), partition=partition)

        assert sorted(r["job_id"] for r in await receive(alice, PARTITIONS)) == jobs


async def test_results_published_right_after_start_are_not_missed(
    results: Results, notifier: Notifier
) -> None:
    # `results` comes first, so its producer is ready when the notifier's start-up returns.
    # The consumer must already have its positions then, or these records would be skipped.
    for partition in range(PARTITIONS):
        await results.publish(ad_result("nobody", f"j-{partition}"), partition=partition)

    await health_when(notifier, records_received=PARTITIONS, records_skipped=0)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (issue_token("user-a", "another secret", 600, time.time()), "invalid token: bad signature"),
        (issue_token("user-a", SECRET, 1, time.time() - 10), "invalid token: expired"),
        (issue_token("user-a", SECRET, 10**6, time.time()), "invalid token: lifetime too long"),
        ("garbage", "invalid token: malformed"),
        (None, "invalid token: malformed"),
    ],
    ids=["other-secret", "expired", "too-long-lived", "garbage", "missing"],
)
async def test_an_invalid_token_is_closed_with_4401(
    notifier: Notifier, results: Results, token: str | None, reason: str
) -> None:
    async with (
        connect(notifier.ws_url(token)) as intruder,
        connect(notifier.ws_url(token_for("user-a"))) as alice,
    ):
        assert await close_of(intruder) == (4401, reason)
        await results.publish(ad_result("user-a", "a-1"))
        assert [r["job_id"] for r in await receive(alice, 1)] == ["a-1"]

    await health_when(notifier, connections=0)


async def test_a_connection_is_closed_when_its_token_expires(notifier: Notifier) -> None:
    async with connect(notifier.ws_url(token_for("user-a", ttl_s=1))) as alice:
        assert await close_of(alice) == (4401, "token expired")


async def test_undecodable_values_are_skipped_with_a_warning(
    notifier: Notifier, results: Results, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="live.feed")
    async with connect(notifier.ws_url(token_for("user-a"))) as alice:
        for value in (b"{not json", b"[1, 2]", b'{"user_id": 42}', b'{"job_id": "j"}', None):
            await results.publish_raw(value)
        await results.publish(ad_result("user-a", "a-after-garbage"))

        assert [r["job_id"] for r in await receive(alice, 1)] == ["a-after-garbage"]

    status = await health_when(notifier, records_received=6, records_skipped=5)
    assert status["status"] == "ok"
    skipped = [r.getMessage() for r in caplog.records if r.name == "live.feed"]
    assert len(skipped) == 5, skipped
    assert all(m.startswith(f"skipping {results.topic}[0]@") for m in skipped)


async def test_the_page_and_health_are_served(notifier: Notifier) -> None:
    async with httpx.AsyncClient(base_url=notifier.base_url) as http:
        page = await http.get("/", params={"token": token_for("user-a")})
        status = await http.get("/healthz")
        missing = await http.get("/nothing-here")

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "script-src 'sha256-" in page.headers["content-security-policy"]
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert 'id="state"' in page.text
    assert status.status_code == 200
    assert status.json()["status"] == "ok"
    assert missing.status_code == 404


async def test_logs_never_contain_a_token(
    notifier: Notifier, results: Results, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    good, bad = token_for("user-a"), issue_token("user-a", "another secret", 600, time.time())
    async with httpx.AsyncClient(base_url=notifier.base_url) as http:
        await http.get("/", params={"token": good})
    async with connect(notifier.ws_url(good)) as alice, connect(notifier.ws_url(bad)) as intruder:
        await close_of(intruder)
        await results.publish(ad_result("user-a", "a-1"))
        await receive(alice, 1)

    # httpx and websockets are this test's clients: what they log is not the server's.
    server_records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore", "websockets"))]
    logged = "\n".join(r.getMessage() for r in server_records)
    assert "token=[redacted]" in logged  # uvicorn did log the paths
    for token in (good, bad):
        assert token not in logged
        assert token.split(".")[1] not in logged


async def test_a_client_that_stops_reading_is_dropped_and_others_keep_up(
    kafka: str, results: Results
) -> None:
    app = create_app(
        bootstrap_servers=kafka, secret=SECRET, token_ttl_s=600, topic=results.topic, queue_size=2
    )
    notifier = Notifier(app, send_buffer_bytes=4096).start()
    try:
        # Small receive buffer and max_queue=1: this client soon stops reading from the socket.
        # No compression: the padding must really take space in the buffers.
        stalled_socket = socket.create_connection(("127.0.0.1", notifier.port))
        stalled_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        async with (
            connect(
                notifier.ws_url(token_for("user-a")), sock=stalled_socket, max_queue=1, compression=None
            ) as stalled,
            connect(notifier.ws_url(token_for("user-a")), compression=None) as reader,
        ):
            count = 20
            for n in range(count):
                # In step with the reader: its outbox never holds more than one result.
                await results.publish(ad_result("user-a", f"a-{n}", padding="x" * 50_000))
                assert [r["job_id"] for r in await receive(reader, 1)] == [f"a-{n}"]
            await health_when(notifier, dropped_connections=1, connections=1)
            # Once the stalled client reads again, the close frame reaches it after what was sent.
            received, close = await drain(stalled)
            assert received < count
            assert close == (1013, "too slow: results were not read in time")
    finally:
        notifier.stop()
