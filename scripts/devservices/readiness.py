"""One readiness check per kind of server, each bounded by a timeout and never raising.

A check first tries a plain TCP connection, so that "nothing listens there" is reported
at once and in those words (PyMongo would otherwise wait out its whole server selection
timeout), then asks the server through its client library: aiokafka lists the topics,
PyMongo sends `ping`. Messages name hosts and ports, never a URL, which may hold a password.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import collect_hosts
from aiokafka.errors import KafkaConnectionError
from pymongo import AsyncMongoClient
from pymongo.errors import InvalidURI, PyMongoError
from pymongo.uri_parser import parse_uri

CLIENT_ID = "devservices-readiness"


@dataclass(frozen=True)
class Readiness:
    ready: bool
    detail: str


Check = Callable[[str, float], Awaitable[Readiness]]
"""`check(address, timeout_s)`: one attempt, at most about `timeout_s` long."""


async def port_readiness(address: str, timeout_s: float) -> Readiness:
    """Ready when something accepts a TCP connection at `HOST:PORT`."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return Readiness(False, f"not a HOST:PORT address: {address!r}")
    return await _first_listening([(host.strip("[]"), int(port))], timeout_s)


async def kafka_readiness(
    bootstrap_servers: str, timeout_s: float, *, brokers: int = 1, node_id: int | None = None
) -> Readiness:
    """Ready when a broker lists its topics and reports at least `brokers` live brokers
    (and among them the node `node_id`, if given: a restarted node of a cluster)."""
    try:
        hosts = [(host, port) for host, port, _ in collect_hosts(bootstrap_servers, randomize=False)]
    except Exception as error:
        return Readiness(False, f"not a Kafka bootstrap address list: {error}")
    listening = await _first_listening(hosts, timeout_s)
    if not listening.ready:
        return listening
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id=CLIENT_ID,
        request_timeout_ms=max(int(timeout_s * 1000), 1),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            cluster: dict[str, Any] = await admin.describe_cluster()
            topics: list[str] = await admin.list_topics()
    except TimeoutError:
        return Readiness(False, f"{_where(hosts)}: no Kafka answer within {timeout_s:g}s")
    except KafkaConnectionError:  # its message only repeats the address list
        return Readiness(False, f"{_where(hosts)}: accepts connections but does not answer as a Kafka broker")
    except Exception as error:
        return Readiness(False, f"{_where(hosts)}: {_describe(error)}")
    finally:
        await admin.close()
    live = cluster.get("brokers") or []
    if not live:
        return Readiness(False, f"{_where(hosts)}: answers, but reports no live broker yet")
    if len(live) < brokers:
        return Readiness(False, f"{_where(hosts)}: {len(live)} live broker(s) of {brokers}")
    if node_id is not None and node_id not in {broker.get("node_id") for broker in live}:
        ids = ", ".join(str(broker.get("node_id")) for broker in live)
        return Readiness(False, f"{_where(hosts)}: node {node_id} is not among the live brokers ({ids})")
    return Readiness(True, f"{len(live)} broker(s), {len(topics)} topic(s)")


async def mongo_readiness(url: str, timeout_s: float) -> Readiness:
    """Ready when the server answers `ping` on the admin database."""
    hosts: list[tuple[str, int]] = []
    if not url.startswith("mongodb+srv://"):  # SRV records are resolved by PyMongo alone
        try:
            hosts = [(str(h), int(p)) for h, p in parse_uri(url)["nodelist"]]
        except (InvalidURI, ValueError):
            # PyMongo's reason may quote the URL, and the URL may hold a password.
            return Readiness(False, "not a valid MongoDB URL")
        listening = await _first_listening(hosts, timeout_s)
        if not listening.ready:
            return listening
    timeout_ms = max(int(timeout_s * 1000), 1)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, appname=CLIENT_ID
    )
    where = _where(hosts) if hosts else "MONGODB_URL"
    try:
        async with asyncio.timeout(timeout_s + 1):  # PyMongo keeps its own deadline; this is a backstop
            reply = await client.admin.command("ping")
    except TimeoutError:
        return Readiness(False, f"{where}: no ping answer within {timeout_s:g}s")
    except PyMongoError as error:
        # "host:port: reason (configured timeouts ...), Timeout: 3s, Topology Description: ..."
        return Readiness(False, f"{where}: no ping answer: {str(error).split(', Timeout:')[0]}")
    finally:
        await client.close()
    if reply.get("ok") != 1:
        return Readiness(False, f"{where}: ping answered {reply!r}")
    return Readiness(True, "ping ok")


CHECKS: dict[str, Check] = {"kafka": kafka_readiness, "mongo": mongo_readiness, "port": port_readiness}


async def _first_listening(hosts: Sequence[tuple[str, int]], timeout_s: float) -> Readiness:
    if not hosts:
        return Readiness(False, "no host given")
    reasons = []
    for host, port in hosts:
        try:
            async with asyncio.timeout(timeout_s):
                _, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            reasons.append(f"{host}:{port}: no TCP answer within {timeout_s:g}s")
            continue
        except ConnectionRefusedError:
            reasons.append(f"nothing listens at {host}:{port} (connection refused)")
            continue
        except OSError as error:  # an unknown host name, no route, ...
            reasons.append(f"{host}:{port}: {error.strerror or error}")
            continue
        writer.close()
        with contextlib.suppress(OSError):  # the server may hang up first; it answered all the same
            await writer.wait_closed()
        return Readiness(True, f"{host}:{port} accepts connections")
    return Readiness(False, "; ".join(reasons))


def _where(hosts: Sequence[tuple[str, int]]) -> str:
    return ",".join(f"{host}:{port}" for host, port in hosts)


def _describe(error: Exception) -> str:
    return str(error) or type(error).__name__
