"""Chaos suite fixtures: a real three-broker Kafka cluster behind TCP proxies, a FerretDB of its own.

Run with `make test-chaos` (`pytest -m chaos`); `make test` leaves these tests out. One
cluster per pytest session, started by `chaos_cluster` through `scripts/services.sh` in a
temporary SERVICES_DIR on ports of its own, so the default services (9092, 27017) keep
running untouched. Every test in tests/chaos/ is marked `chaos` by this conftest.

The API (tests code against this; tests/chaos/cluster.py and proxy.py hold the classes):

Session fixtures
  chaos_cluster -> Cluster
      .bootstrap                "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3": the proxies. The brokers
                                advertise these on the client listener; inter-broker and controller
                                traffic go direct on listeners of their own.
      .nodes                    [Node, Node, Node]; .node(node_id) -> Node
          Node.node_id, Node.pid (None when not running), Node.address (direct, not proxied)
          Node.kill()           SIGKILL, returns once the process is gone (plain call)
          await Node.stop()     SIGTERM, waits for the exit (a controlled shutdown)
          await Node.start()    starts it again (scripts/services.sh up kafka-<id>); returns once it
                                is a live broker of the cluster (its partitions may still be catching up)
          await Node.wait_ready(timeout_s=120)
      .proxies                  [TcpProxy ...], one per node, same order as .nodes
      .cut() / .heal()          all proxies: cut drops every open connection and blackholes new
                                ones (accepted, never answered) until heal; cut(mode="refuse")
                                refuses them instead. Inter-broker traffic is not affected.
      await .leader_counts(topic) -> {node_id: partitions led}
      await .leader_of_most(topic) -> Node
      await .wait_healthy(timeout_s=180)  every node up, every partition of every topic with its full ISR
  chaos_store -> Store          a FerretDB for this session only
      .url, .pid, .freeze() (SIGSTOP), .thaw() (SIGCONT), .kill() (SIGKILL, waits; plain calls),
      await .start() (starts it again on the same port and data, waits for ping)

Before each test (autouse) every node runs, the proxies are healed, the store runs and
answers, and every partition has its full ISR: a test may leave the cluster broken.

Per-test fixtures
  chaos_run_id -> str           unique per test; topics are prefixed `c<run_id>.`
  chaos_topics -> TopicNames    deleted after the test
  chaos_resend -> FakeResend    started, no rate limit (RESEND_RATE_LIMIT_PER_S is set high)
  chaos_env -> dict[str, str]   the worker's environment: the cluster (proxies), the chaos store,
                                the fake Resend, the topic prefix, group id, RF 3 / min ISR 2
  workers -> Workers            `await workers.start(n=3, **env_overrides) -> list[WorkerProcess]`
                                (tests/integration/worker.py: the real `faststream run` command,
                                started side by side, each with its own log), `.processes`,
                                `.alive()`; all stopped (SIGTERM) at teardown
  chaos_publisher -> JobPublisher  on the proxies (acks=all, idempotent), on the test's topics
  chaos_report -> Report        `assert_ending` records the test's figures in it; they are printed
                                at the test's end and in a table at the session's end (and
                                appended as JSON lines to $CHAOS_REPORT_FILE if set);
                                `report.note(key=value)` adds a figure of the test's own

Helpers (tests/chaos/scenario.py)
  email_jobs(count, run_id) -> list[EmailJobModel]   unique content per job (tests/integration/jobs.py)
  publish_paced(publisher, jobs, over_s=30) -> Paced  publishes at a steady rate in a background
                                task, so a fault lands in the middle of the work; `.published`,
                                `await .wait(timeout_s)`, `.done_at_s`
  sent_contents(resend) -> Counter of content keys;  await wait_for_sends(resend, count, timeout_s=)
  await assert_ending(report=, fault=, resend=, jobs=, cluster=, topics=, group_id=, workers=,
                      fault_started_s=, fault_ended_s=, timeout_s=180, allowed_dead_letters=0)
                                waits until every job was sent and its offset committed, then
                                asserts: each job's email sent exactly once (by content at the fake
                                Resend), nothing in any DLQ (`allowed_dead_letters`), every worker
                                alive; records jobs, duplicates, lost, longest send gap and time to
                                recover (wall clock, time.time(): from fault_ended_s to the last send).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.producer import JobPublisher
from streams.topics import TopicNames
from tests.chaos.cluster import Cluster, Store, start_session, stop_session
from tests.chaos.scenario import Figures, Report, Workers
from tests.fakes.resend_server import FakeResend
from tests.integration.kafka_tools import delete_topics

CHAOS_DIR = Path(__file__).parent
_FIGURES: list[Figures] = []


def _chaos_requested(config: pytest.Config) -> bool:
    """`-m` names chaos, or a path inside tests/chaos was given."""
    if "chaos" in (config.option.markexpr or ""):
        return True
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path == CHAOS_DIR or CHAOS_DIR in path.parents:
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests/chaos/ `chaos` (and `integration`); leave them out unless asked for."""
    chaos = [item for item in items if CHAOS_DIR in Path(item.path).parents]
    for item in chaos:
        item.add_marker(pytest.mark.chaos)
        item.add_marker(pytest.mark.integration)
    if chaos and not _chaos_requested(config):
        config.hook.pytest_deselected(items=chaos)
        items[:] = [item for item in items if item not in set(chaos)]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("chaos figures")
    terminalreporter.write_line(
        "| test | fault | jobs | duplicates | lost | DLQ | recovery | longest gap | wall |"
    )
    for f in _FIGURES:
        recovery = "-" if f.recovery_s is None else f"{f.recovery_s:.1f} s"
        gap = "-" if f.longest_send_gap_s is None else f"{f.longest_send_gap_s:.1f} s"
        wall = "-" if f.wall_s is None else f"{f.wall_s:.0f} s"
        terminalreporter.write_line(
            f"| {f.test} | {f.fault} | {f.jobs} | {f.duplicates} | {f.lost} | {f.dead_letters} "
            f"| {recovery} | {gap} | {wall} |"
        )
        if f.notes:
            terminalreporter.write_line(f"|   {f.notes}")


@pytest.fixture(scope="session")
def _chaos_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Store]]:
    import time

    started_s = time.monotonic()
    # CHAOS_SERVICES_DIR keeps the servers' logs after the session (a fresh dir each run).
    kept = os.environ.get("CHAOS_SERVICES_DIR")
    services_dir = Path(kept) if kept else tmp_path_factory.mktemp("chaos") / "services"
    cluster, store, loop = start_session(services_dir)
    print(
        f"\n[chaos] cluster at {cluster.bootstrap} (direct {cluster.direct}), store {store.url}: "
        f"up in {time.monotonic() - started_s:.1f}s"
    )
    try:
        yield cluster, store
    finally:
        stop_session(cluster, loop)


@pytest.fixture(scope="session")
def chaos_cluster(_chaos_session: tuple[Cluster, Store]) -> Cluster:
    return _chaos_session[0]


@pytest.fixture(scope="session")
def chaos_store(_chaos_session: tuple[Cluster, Store]) -> Store:
    return _chaos_session[1]


@pytest.fixture(autouse=True)
async def _whole_again(chaos_cluster: Cluster, chaos_store: Store) -> None:
    """Every node, the proxies and the store as they should be before a test starts."""
    chaos_cluster.heal()
    with contextlib.suppress(AssertionError):
        chaos_store.thaw()
    if chaos_store.pid is None:
        await chaos_store.start()
    for node in chaos_cluster.nodes:
        if node.pid is None:
            await node.start()
    await chaos_cluster.wait_healthy()


@pytest.fixture
def chaos_run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def chaos_topics(chaos_cluster: Cluster, chaos_run_id: str) -> AsyncIterator[TopicNames]:
    names = TopicNames.with_prefix(f"c{chaos_run_id}.")
    yield names
    chaos_cluster.heal()
    with contextlib.suppress(Exception):
        await delete_topics(chaos_cluster.bootstrap, names.all)


@pytest.fixture
def chaos_resend() -> Iterator[FakeResend]:
    server = FakeResend().start()
    yield server
    server.stop()


@pytest.fixture
def chaos_env(
    chaos_cluster: Cluster,
    chaos_store: Store,
    chaos_resend: FakeResend,
    chaos_run_id: str,
    tmp_path: Path,
) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": chaos_cluster.bootstrap,
        "KAFKA_TOPIC_PREFIX": f"c{chaos_run_id}.",
        "KAFKA_GROUP_ID": f"worker-c{chaos_run_id}",
        "KAFKA_REPLICATION_FACTOR": "3",  # topics get min.insync.replicas=2 (streams/admin.py)
        "MONGODB_URL": chaos_store.url,
        "MONGODB_DATABASE": f"chaos_{chaos_run_id}",
        "RESEND_API_KEY": "re_test_key",
        "RESEND_API_URL": chaos_resend.url,
        "RESEND_TIMEOUT_S": "5",
        "RESEND_RATE_LIMIT_PER_S": "10000",
        "EMAIL_SEND_LEASE_S": "10",
        "OUTBOX_DIR": str(tmp_path / "outbox"),
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture
def workers(chaos_env: dict[str, str], tmp_path: Path, chaos_topics: TopicNames) -> Iterator[Workers]:
    # Depends on `chaos_topics`: the workers stop before their topics are deleted.
    pool = Workers(chaos_env, tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture
async def chaos_publisher(chaos_cluster: Cluster, chaos_topics: TopicNames) -> AsyncIterator[JobPublisher]:
    async with JobPublisher(chaos_cluster.bootstrap, chaos_topics) as publisher:
        yield publisher


@pytest.fixture
def chaos_report(request: pytest.FixtureRequest) -> Iterator[Report]:
    report = Report(request.node.name, _FIGURES)
    yield report
    report.finish()
