"""The chaos suite's servers: a three-broker KRaft cluster behind proxies, and a FerretDB of its own.

Both are started by `scripts/services.sh` (the same launcher as `make services`) on a
SERVICES_DIR and ports of their own, so the default services keep running beside them.
The Kafka jars and the FerretDB binary are shared with the default .services/ when it
has them (KAFKA_LIBS_DIR, FERRETDB_BIN), so nothing is fetched or built twice.

Every node advertises its proxy's address on the client listener; brokers replicate
and controllers vote on listeners of their own. So after bootstrap every client byte
still goes through a proxy, and `Cluster.cut()` partitions the clients from the whole
cluster while the cluster itself stays whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal

from aiokafka.admin import AIOKafkaAdminClient

from scripts.devservices.waiting import process_alive
from streams.settings import REPO_ROOT
from tests.chaos.proxy import ProxyLoop, TcpProxy

SERVICES_SH = REPO_ROOT / "scripts" / "services.sh"
DEFAULT_SERVICES = REPO_ROOT / ".services"
BROKERS = 3
PORT_STEP = 10  # node <id>'s ports: base + (id - 1) * PORT_STEP
START_TIMEOUT_S = 240
ADMIN_TIMEOUT_MS = 5_000


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_base_port(brokers: int = BROKERS) -> int:
    """A base port B (a multiple of 100 in 20000..29900) with B+0..3 of every node and B+50 free.

    Below the OS's ephemeral range, where the proxies' ports come from; random, so that
    two sessions on one machine rarely try the same.
    """
    bases = list(range(20_000, 30_000, 100))
    random.shuffle(bases)
    for base in bases:
        ports = [base + (i * PORT_STEP) + offset for i in range(brokers) for offset in range(4)]
        if all(_free(port) for port in [*ports, base + 50]):
            return base
    raise RuntimeError("no free block of ports in 20000..29999")


class Services:
    """`scripts/services.sh` with this session's environment."""

    def __init__(self, services_dir: Path, base_port: int, advertised_ports: Sequence[int]) -> None:
        self.dir = services_dir
        self.base_port = base_port
        env = {
            k: v
            for k, v in os.environ.items()
            # Never the configured servers: the script would use them instead of starting its own.
            if k not in ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URL", "KAFKA_BROKERS")
        }
        env.update(
            SERVICES_DIR=str(services_dir),
            SERVICES_PYTHON=sys.executable,
            KAFKA_BROKERS=str(len(advertised_ports)),
            KAFKA_PORT=str(base_port),
            KAFKA_CONTROLLER_PORT=str(base_port + 1),
            KAFKA_SASL_PORT=str(base_port + 2),
            KAFKA_INTERNAL_PORT=str(base_port + 3),
            KAFKA_PORT_STEP=str(PORT_STEP),
            KAFKA_ADVERTISED_PORTS=",".join(str(p) for p in advertised_ports),
            MONGO_PORT=str(base_port + 50),
            KAFKA_START_TIMEOUT=str(START_TIMEOUT_S),
            STOP_TIMEOUT="60",
        )
        if (DEFAULT_SERVICES / "kafka" / "libs").is_dir():
            env["KAFKA_LIBS_DIR"] = str(DEFAULT_SERVICES / "kafka" / "libs")
        if (DEFAULT_SERVICES / "bin" / "ferretdb").is_file():
            env["FERRETDB_BIN"] = str(DEFAULT_SERVICES / "bin" / "ferretdb")
        self.env = env
        self.log_path = services_dir / "services-sh.log"

    def run(self, *args: str, timeout_s: float = START_TIMEOUT_S + 60, **env: str) -> str:
        services_dir = self.dir
        services_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["bash", str(SERVICES_SH), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        with self.log_path.open("a") as log:
            log.write(f"$ services.sh {' '.join(args)} -> {done.returncode}\n{done.stdout}{done.stderr}\n")
        if done.returncode != 0:
            raise RuntimeError(f"services.sh {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    async def arun(self, *args: str) -> str:
        return await asyncio.to_thread(self.run, *args)

    def pid(self, name: str) -> int | None:
        try:
            pid = int((self.dir / "run" / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) else None


def _wait_gone(pid: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while process_alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} still runs {timeout_s:g}s after SIGKILL")
        time.sleep(0.02)


class Node:
    """One broker + controller of the cluster."""

    def __init__(self, services: Services, node_id: int) -> None:
        self._services = services
        self.node_id = node_id
        self.port = services.base_port + (node_id - 1) * PORT_STEP
        self.log_dir = services.dir / "logs" / f"kafka-{node_id}"

    def __repr__(self) -> str:
        return f"Node({self.node_id}, pid={self.pid})"

    @property
    def name(self) -> str:
        return f"kafka-{self.node_id}"

    @property
    def address(self) -> str:
        """The client listener itself, not the proxy (its metadata still names the proxies)."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._services.pid(self.name)

    def kill(self) -> None:
        """`kill -9`: no controlled shutdown. Returns once the process is gone."""
        pid = self.pid
        if pid is None:
            raise AssertionError(f"{self.name} is not running")
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)

    async def stop(self) -> None:
        """SIGTERM (a controlled shutdown: leadership moves first), and wait until it exits."""
        await self._services.arun("down", self.name)

    async def start(self) -> None:
        """Start it again; returns once it is a live broker of the cluster."""
        await self._services.arun("up", self.name)

    async def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                async with _admin(self.address) as admin:
                    cluster = await admin.describe_cluster()
                if self.node_id in {b["node_id"] for b in cluster["brokers"]}:
                    return
            except Exception as error:
                last: Any = error
            else:
                last = cluster
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not a live broker after {timeout_s:g}s: {last!r}")
            await asyncio.sleep(0.5)


class Cluster:
    """Three nodes, a proxy in front of each; `.bootstrap` is the proxies."""

    def __init__(self, services: Services, proxies: Sequence[TcpProxy]) -> None:
        self.services = services
        self.proxies = list(proxies)
        self.nodes = [Node(services, node_id) for node_id in range(1, len(proxies) + 1)]

    @property
    def bootstrap(self) -> str:
        return ",".join(proxy.address for proxy in self.proxies)

    @property
    def direct(self) -> str:
        """The nodes' own client listeners (bootstrap only: the metadata names the proxies)."""
        return ",".join(node.address for node in self.nodes)

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id - 1]

    def cut(self, mode: Literal["blackhole", "refuse"] = "blackhole") -> None:
        """Cut every client from every broker: open connections dropped, new ones unanswered."""
        for proxy in self.proxies:
            proxy.cut(mode)

    def heal(self) -> None:
        for proxy in self.proxies:
            proxy.heal()

    async def describe(self, topics: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """aiokafka's describe_topics: each topic's partitions with leader, replicas and isr."""
        async with _admin(self.bootstrap) as admin:
            names = list(topics) if topics is not None else await admin.list_topics()
            described: list[dict[str, Any]] = await admin.describe_topics(names)
            return described

    async def leader_counts(self, topic: str) -> dict[int, int]:
        """How many partitions of `topic` each node leads (nodes that lead none: 0)."""
        (described,) = await self.describe([topic])
        counts = Counter(p["leader"] for p in described["partitions"])
        return {node.node_id: counts.get(node.node_id, 0) for node in self.nodes}

    async def leader_of_most(self, topic: str) -> Node:
        counts = await self.leader_counts(topic)
        return self.node(max(counts, key=lambda node_id: (counts[node_id], -node_id)))

    async def wait_healthy(self, timeout_s: float = 180.0) -> float:
        """Until every node is a live broker and every partition of every topic has its full ISR.

        Returns the seconds it took.
        """
        start_s = time.monotonic()
        last: Any = None
        while True:
            try:
                last = await self._unhealthy()
            except Exception as error:
                last = repr(error)
            if last is None:
                return time.monotonic() - start_s
            if time.monotonic() - start_s > timeout_s:
                raise AssertionError(f"cluster not healthy after {timeout_s:g}s: {last}")
            await asyncio.sleep(0.5)

    async def _unhealthy(self) -> str | None:
        """Why the cluster is not healthy yet, or None."""
        down = [node.name for node in self.nodes if node.pid is None]
        if down:
            return f"not running: {', '.join(down)}"
        async with _admin(self.bootstrap) as admin:
            cluster = await admin.describe_cluster()
            live = {b["node_id"] for b in cluster["brokers"]}
            if len(live) < len(self.nodes):
                return f"live brokers: {sorted(live)}"
            described = await admin.describe_topics(await admin.list_topics())
        short = [
            f"{t['topic']}[{p['partition']}] leader {p['leader']} isr {p['isr']} of {p['replicas']}"
            for t in described
            for p in t["partitions"]
            if p["leader"] < 0 or sorted(p["isr"]) != sorted(p["replicas"])
        ]
        return f"{len(short)} partitions short: {'; '.join(short[:5])}" if short else None


class Store:
    """The session's own FerretDB, which tests may freeze, kill and start again."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self.url = f"mongodb://127.0.0.1:{services.base_port + 50}"

    @property
    def pid(self) -> int | None:
        return self._services.pid("ferretdb")

    def _signal(self, sig: signal.Signals) -> int:
        pid = self.pid
        if pid is None:
            raise AssertionError("the chaos FerretDB is not running")
        os.kill(pid, sig)
        return pid

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL (a frozen process dies too); returns once it is gone."""
        _wait_gone(self._signal(signal.SIGKILL))

    async def start(self) -> None:
        """Start it again on the same port and data; returns once it answers `ping`."""
        await self._services.arun("up", "ferretdb")


def start_session(services_dir: Path) -> tuple[Cluster, Store, ProxyLoop]:
    """Proxies first (their ports go into the brokers' configs), then the servers."""
    loop = ProxyLoop()
    base_port = pick_base_port()
    proxies = [TcpProxy(loop, "127.0.0.1", base_port + i * PORT_STEP).start() for i in range(BROKERS)]
    services = Services(services_dir, base_port, [proxy.port for proxy in proxies])
    cluster = Cluster(services, proxies)
    store = Store(services)
    try:
        services.run("up")
    except BaseException:
        stop_session(cluster, loop)
        raise
    return cluster, store, loop


def stop_session(cluster: Cluster, loop: ProxyLoop) -> None:
    try:
        # All nodes at once: a node's controlled shutdown needs a quorum of controllers,
        # which may already be stopping; past the deadline it is killed (a throwaway cluster).
        cluster.services.run("down", timeout_s=300, STOP_TIMEOUT="20")
    finally:
        for proxy in cluster.proxies:
            proxy.close()
        loop.close()


@contextlib.asynccontextmanager
async def _admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=ADMIN_TIMEOUT_MS)
    try:
        await client.start()
        yield client
    finally:
        await client.close()
