"""The worker's HTTP routes as users run it: `/metrics` serves every metric the Grafana
dashboard queries; `/healthz` answers while it runs; `/readyz` follows the store."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from processors.email.jobs import SendOtpJob, WelcomeEmailJob
from streams.producer import JobPublisher
from streams.settings import REPO_ROOT
from streams.topics import TopicNames
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import MONGODB_URL
from tests.integration.test_ads import ad_job, model_env
from tests.integration.test_delivery_status import free_port
from tests.polling import eventually

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "worker-dashboard.json"
METRIC_NAME = re.compile(r"\b((?:worker|faststream)_[a-z0-9_]+)\b")


def dashboard_metric_names(path: Path = DASHBOARD) -> set[str]:
    """Every metric name in the dashboard's panel queries and template variables."""
    dashboard = json.loads(path.read_text("utf-8"))
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return {name for query in queries for name in METRIC_NAME.findall(query)}


def exposed_names(text: str) -> set[str]:
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }


async def test_metrics_serve_every_name_the_dashboard_queries(
    start_worker: Any, publisher: JobPublisher, topics: TopicNames, fake_openai: FakeOpenAI, run_id: str
) -> None:
    port = free_port()
    start_worker(HTTP_HOST="127.0.0.1", HTTP_PORT=str(port), **model_env(fake_openai))
    for i in range(3):
        code = SendOtpJob(type="SEND_OTP", job_id=f"{run_id}-otp-{i}", to=f"u{i}@example.com", code="135790")
        await publisher.email(code, topic=topics.email_jobs.main)
    welcome = WelcomeEmailJob(type="WELCOME_EMAIL", job_id=f"{run_id}-w", to="ada@example.com", name="Ada")
    await publisher.email(welcome, topic=topics.email_bulk.main)
    await publisher.ad(ad_job(f"{run_id}-ad", "Metered lamp"), topic=topics.ad_jobs.main)
    wanted = dashboard_metric_names()
    assert {
        "worker_jobs_total",
        "worker_consumer_lag_records",
        "faststream_received_messages_total",
    } <= wanted

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

        async def missing() -> set[str] | None:
            response = await http.get("/metrics")
            assert response.status_code == 200
            gone = wanted - exposed_names(response.text)
            return gone if gone else None

        async def all_there() -> bool:
            return await missing() is None

        try:
            found: bool = await eventually(
                all_there, timeout_s=60, interval_s=0.5, what="every dashboard metric"
            )
            assert found
        except AssertionError:
            pytest.fail(f"/metrics lacks what the dashboard queries: {sorted(await missing() or ())}")
        text = (await http.get("/metrics")).text

    sent = [
        line
        for line in text.splitlines()
        if line.startswith("worker_jobs_total{") and 'outcome="sent"' in line
    ]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in sent) == 4
    assert 'worker_model_tokens_total{kind="input"' in text
    assert f"{run_id}-" not in text, "no job ids in labels"


class _Pipe(socketserver.BaseRequestHandler):
    """Forwards one client connection to the real store, both ways."""

    server: StoreProxy

    def handle(self) -> None:
        target = urlsplit(MONGODB_URL)
        upstream = socket.create_connection((target.hostname or "127.0.0.1", target.port or 27017))
        self.server.track(self.request, upstream)
        relay = threading.Thread(target=_copy, args=(upstream, self.request), daemon=True)
        relay.start()
        _copy(self.request, upstream)
        relay.join(timeout=5)


def _copy(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


class StoreProxy(socketserver.ThreadingTCPServer):
    """A store address the test can take away and give back: a TCP proxy to MONGODB_URL."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Pipe)
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def track(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._sockets.extend(sockets)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()


async def test_readyz_follows_the_store_and_healthz_stays_up(start_worker: Any) -> None:
    port, store_port = free_port(), free_port()
    proxy = StoreProxy(store_port)
    try:
        start_worker(
            HTTP_HOST="127.0.0.1",
            HTTP_PORT=str(port),
            MONGODB_URL=f"mongodb://127.0.0.1:{store_port}",
            MONGODB_TIMEOUT_MS="2000",
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def status(path: str) -> int:
                return (await http.get(path)).status_code

            async def ready() -> bool:
                return await status("/readyz") == 200

            async def not_ready() -> bool:
                return await status("/readyz") == 503

            assert await status("/healthz") == 200
            reached: bool = await eventually(ready, timeout_s=15, what="ready")

            proxy.stop()
            # Within 15 s of the store going away (the bound), with no retry of the check.
            reached = await eventually(not_ready, timeout_s=15, what="not ready, store gone")
            body = (await http.get("/readyz")).json()
            assert body["checks"] == {"broker": "ok", "store": "failing"}
            assert await status("/healthz") == 200

            proxy = StoreProxy(store_port)
            reached = await eventually(ready, timeout_s=30, what="ready again")
            assert reached
    finally:
        proxy.stop()
