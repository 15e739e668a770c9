"""The store goes away under load and comes back: the worker works again, every email sent once.

A worker stopped sending for good after the chaos suite froze and killed the store
(tests/chaos/test_store_outage.py): its `AsyncMongoClient` was wedged. On Python 3.11
pymongo waits for a server in rounds of `asyncio.wait_for(condition.wait(), 0.5)`; a call
cancelled just as such a round times out (the readiness probe's 4 s timeout is eight
rounds) gives up on the inner task before it has taken the topology lock back. The lock
then stays held with no owner, and no store call of the process (nor the driver's own
monitor) ever ends again. So store calls are never cancelled: `guard_store` shields them,
and the readiness check is left to end on its own.

- The focused test cancels store calls the way the worker's revokes and timeouts do, while
  the store is down (a proxy refusing connections), then brings the store back: the
  worker's store client must answer again.
- The end-to-end test runs the real worker against a FerretDB of its own, freezes the store
  (SIGSTOP) under load, kills it (SIGKILL) and starts it again: every email is sent
  exactly once, and the worker reports the store back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from pydantic import SecretStr
from pymongo import AsyncMongoClient
from pymongo.uri_parser import parse_uri

from processors.email.jobs import EmailJobModel
from processors.errors import TransientError
from processors.store import guard_store
from streams.producer import JobPublisher
from streams.services import build_store_client
from streams.settings import REPO_ROOT, StoreSettings
from streams.topics import TopicNames
from tests.chaos.proxy import ProxyLoop, TcpProxy
from tests.fakes.resend_server import FakeResend
from tests.integration.conftest import KAFKA, MONGODB_URL
from tests.integration.jobs import mixed_job
from tests.integration.worker import WorkerProcess
from tests.polling import eventually

pytestmark = pytest.mark.integration

T = TypeVar("T")

# The focused test: callers of the store, some cancelled every round of the driver's wait.
CALLERS = 100
CANCELLED_PER_ROUND = 50
DRIVER_ROUND_S = 0.5  # pymongo's MIN_HEARTBEAT_INTERVAL: how often a waiting call re-checks
CANCEL_WITHIN_S = 0.05
OUTAGE_S = 8.0

# The end-to-end test.
FERRETDB_BIN = Path(os.environ.get("FERRETDB_BIN", REPO_ROOT / ".services" / "bin" / "ferretdb"))
EMAILS = 600
PUBLISH_OVER_S = 20.0
FREEZE_S = 20.0
FAST_RETRIES = {"EMAIL_RETRY_BASE_MS": "100", "EMAIL_RETRY_MULTIPLIER": "2", "EMAIL_RETRY_CAP_MS": "1000"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _answers(client: AsyncMongoClient[dict[str, Any]], database: str, *, within_s: float) -> bool:
    """One insert through `guard_store` ended well within `within_s` (left running if not)."""
    call = asyncio.ensure_future(guard_store(lambda: client[database]["outage"].insert_one({})))
    done, _ = await asyncio.wait({call}, timeout=within_s)
    if not done:
        call.add_done_callback(lambda c: c.cancelled() or c.exception())
        return False
    return call.exception() is None


def _on_a_loop_of_its_own(scenario: Coroutine[Any, Any, T], *, timeout_s: float) -> T:
    """Run `scenario` on a new event loop in a thread; its result, or a failed assertion.

    A wedged driver leaves tasks that not even a cancellation ends; on the test's own loop
    they would hang the test at teardown instead of failing it; such a loop is left unclosed.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        try:
            outcome["result"] = loop.run_until_complete(scenario)
        except BaseException as error:
            outcome["error"] = error
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=5))
        if all(task.done() for task in pending):
            loop.close()

    thread = threading.Thread(target=run, name="store-outage", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if "error" in outcome:
        raise outcome["error"]
    if "result" not in outcome:
        raise AssertionError(f"the scenario did not end within {timeout_s:.0f}s")
    return cast(T, outcome["result"])


@dataclass
class AfterTheOutage:
    answered: bool = False
    unexpected: list[str] = field(default_factory=list)


async def _cancelled_calls_during_an_outage(proxy: TcpProxy, database: str, seed: str) -> AfterTheOutage:
    seen = AfterTheOutage()
    # Given the worker's store client, answering
    client = build_store_client(
        StoreSettings(url=SecretStr(f"mongodb://{proxy.address}/?directConnection=true"))
    )
    try:
        assert await _answers(client, database, within_s=10)

        # When the store goes down under a hundred jobs that keep trying, and jobs are
        # cancelled every round of the driver's wait (revokes, shutdowns, timeouts)
        proxy.cut(mode="refuse")

        async def job() -> None:
            while True:
                try:
                    await guard_store(lambda: client[database]["outage"].insert_one({}))
                except TransientError:
                    continue
                except Exception as error:
                    seen.unexpected.append(repr(error))
                    return

        loop = asyncio.get_running_loop()
        rng = random.Random(seed)
        jobs = [asyncio.create_task(job()) for _ in range(CALLERS)]
        ends_s = time.monotonic() + OUTAGE_S
        while time.monotonic() < ends_s:
            await asyncio.sleep(DRIVER_ROUND_S)
            for _ in range(CANCELLED_PER_ROUND):
                loop.call_later(rng.uniform(0, CANCEL_WITHIN_S), jobs.pop(rng.randrange(len(jobs))).cancel)
            jobs += [asyncio.create_task(job()) for _ in range(CANCELLED_PER_ROUND)]
        for task in jobs:
            task.cancel()
        await asyncio.wait(jobs, timeout=5)

        # Then, once the store is back, the client answers again
        proxy.heal()
        deadline_s = time.monotonic() + 30
        while not seen.answered and time.monotonic() < deadline_s:
            seen.answered = await _answers(client, database, within_s=3)
            await asyncio.sleep(0.2)
        if seen.answered:
            await guard_store(lambda: client.drop_database(database))
    finally:
        # Bounded: a wedged client never closes.
        await asyncio.wait({asyncio.ensure_future(client.close())}, timeout=5)
    return seen


@pytest.fixture
def proxied_store(servers: dict[str, str]) -> Iterator[TcpProxy]:
    """The test's way to the integration store, which it can cut and heal."""
    host, port = parse_uri(MONGODB_URL)["nodelist"][0]
    loop = ProxyLoop()
    proxy = TcpProxy(loop, host, port).start()
    try:
        yield proxy
    finally:
        proxy.close()
        loop.close()


def test_store_calls_cancelled_while_the_store_is_down_leave_the_client_working(
    proxied_store: TcpProxy, run_id: str
) -> None:
    seen = _on_a_loop_of_its_own(
        _cancelled_calls_during_an_outage(proxied_store, f"test_{run_id}", run_id), timeout_s=90
    )

    assert seen.unexpected == []
    assert seen.answered, "the store client never answered again after the outage"


class OwnStore:
    """A FerretDB of the test's own (the shared one stays untouched), to freeze, kill and restart."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        if not FERRETDB_BIN.is_file():
            pytest.fail(f"no FerretDB binary at {FERRETDB_BIN}; `make services` builds it")
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = _free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        """Start on the same port and data; returns once it answers a ping."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(FERRETDB_BIN),
                    "--handler=sqlite",
                    f"--sqlite-url=file:{self.data_dir}/",
                    f"--listen-addr=127.0.0.1:{self.port}",
                    "--state-dir=-",
                    "--telemetry=disable",
                    "--debug-addr=-",
                    "--log-level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.url, serverSelectionTimeoutMS=1_000)
        try:

            async def pings() -> bool:
                with contextlib.suppress(Exception):
                    return bool((await client.admin.command("ping")).get("ok"))
                return False

            await eventually(pings, timeout_s=60, interval_s=0.2, what="the test's FerretDB to answer")
        finally:
            await client.close()

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL (a frozen process dies too); returns once it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
async def own_store(tmp_path: Path) -> AsyncIterator[OwnStore]:
    store = OwnStore(tmp_path / "ferretdb", tmp_path / "ferretdb.log")
    await store.start()
    try:
        yield store
    finally:
        store.kill()


def _unique_emails(count: int, run_id: str) -> list[EmailJobModel]:
    """Emails that all differ in content, each to a recipient of its own (a code redelivered
    after a newer one to the same recipient would be dropped as superseded, by design)."""
    return [
        mixed_job(i, run_id).model_copy(update={"to": f"u{i}.{run_id}@example.com"}) for i in range(count)
    ]


def _sent(resend: FakeResend) -> Counter[str]:
    return Counter(delivery.content_key for delivery in resend.deliveries)


@pytest.mark.slow
async def test_a_worker_sends_every_email_once_after_the_store_froze_and_was_killed(
    own_store: OwnStore,
    start_worker: Any,
    fake_resend: FakeResend,
    topics: TopicNames,
    run_id: str,
) -> None:
    # Given a worker sending a steady stream of emails, its store a FerretDB of the test's own
    worker: WorkerProcess = start_worker(MONGODB_URL=own_store.url, EMAIL_SEND_LEASE_S="10", **FAST_RETRIES)
    emails = _unique_emails(EMAILS, run_id)
    async with JobPublisher(KAFKA, topics) as publisher:

        async def publish() -> None:
            for i, job in enumerate(emails):
                await publisher.email(job, topic=topics.email_jobs.main)
                if i % 10 == 9:
                    await asyncio.sleep(PUBLISH_OVER_S / (EMAILS / 10))

        publishing = asyncio.create_task(publish())
        try:
            await eventually(lambda: len(_sent(fake_resend)) >= EMAILS // 5, timeout_s=60, what="sends")

            # When the store freezes (it accepts connections and answers nothing), then
            # dies and starts again
            own_store.freeze()
            await asyncio.sleep(FREEZE_S)  # the fault's length, not a wait for a condition
            own_store.kill()
            await own_store.start()
            await asyncio.wait_for(publishing, timeout=120)
        finally:
            publishing.cancel()

    # Then every email is sent, exactly once, and the worker says the store is back
    await eventually(
        lambda: len(_sent(fake_resend)) >= EMAILS,
        timeout_s=120,
        interval_s=0.5,
        what=f"all {EMAILS} emails sent after the store came back",
    )
    assert {content: n for content, n in _sent(fake_resend).items() if n > 1} == {}
    await eventually(
        lambda: "readiness: store answers again" in worker.log_since_start(),
        timeout_s=30,
        what="the worker to report the store back",
    )
    assert worker.proc is not None
    assert worker.proc.poll() is None, "the worker exited"
