"""`/healthz` answers while the process runs; `/readyz` follows the cached background checks."""

from __future__ import annotations

import asyncio

import httpx

from streams.health import Readiness, healthz, readyz
from tests.polling import eventually


class Switch:
    def __init__(self) -> None:
        self.up = True
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        return self.up


async def raises() -> bool:
    raise ConnectionError("refused")


async def hangs() -> bool:
    await asyncio.Event().wait()
    return True


def client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker")  # type: ignore[arg-type]


async def test_healthz_answers_get_only() -> None:
    async with client(healthz()) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.post("/healthz")).status_code == 405


async def test_readyz_is_503_until_started_then_follows_the_checks() -> None:
    broker, store = Switch(), Switch()
    readiness = Readiness({"broker": broker, "store": store}, interval_s=0.01)
    async with client(readyz(readiness)) as http:
        assert (await http.get("/readyz")).status_code == 503  # not started yet
        readiness.start()
        try:
            await eventually(lambda: readiness.ready, timeout_s=5, what="ready")
            response = await http.get("/readyz")
            assert response.status_code == 200
            assert response.json() == {"ready": True, "checks": {"broker": "ok", "store": "ok"}}

            store.up = False
            await eventually(lambda: not readiness.ready, timeout_s=5, what="not ready")
            response = await http.get("/readyz")
            assert response.status_code == 503
            assert response.json()["checks"] == {"broker": "ok", "store": "failing"}

            store.up = True
            await eventually(lambda: readiness.ready, timeout_s=5, what="ready again")
            assert (await http.get("/readyz")).status_code == 200
        finally:
            await readiness.stop()
    assert not readiness.ready


async def test_a_check_that_raises_or_hangs_counts_as_failing() -> None:
    readiness = Readiness({"raises": raises, "hangs": hangs}, timeout_s=0.05)
    await readiness.check_once()
    assert readiness.results == {"raises": False, "hangs": False}


async def test_the_handler_never_runs_a_check() -> None:
    store = Switch()
    readiness = Readiness({"store": store})
    await readiness.check_once()
    async with client(readyz(readiness)) as http:
        for _ in range(5):
            await http.get("/readyz")
    assert store.calls == 1
