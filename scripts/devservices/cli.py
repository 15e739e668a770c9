"""Command line for scripts/services.sh: `check`, `wait`, `status` and `render-config`.

Exit status: 0 ready / done; 1 not ready, deadline passed or a server down; 2 usage;
3 the process being waited for exited.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

from scripts.devservices.config import TemplateError, render_properties, write_atomically
from scripts.devservices.readiness import CHECKS, Readiness, kafka_readiness
from scripts.devservices.waiting import Outcome, process_alive, wait_until_ready

PREFIX = "[services]"
EXIT_NOT_READY = 1
EXIT_USAGE = 2
EXIT_PROCESS_EXITED = 3
ADDRESS_ENV = {"kafka": "KAFKA_BOOTSTRAP_SERVERS", "mongo": "MONGODB_URL"}
LOG_TAIL_LINES = 30


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    # aiokafka logs every refused connection at ERROR; our own messages say it better.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL + 1)
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = args.command
    return asyncio.run(command(args))


def _check(args: argparse.Namespace) -> Callable[[str, float], Awaitable[Readiness]]:
    """The check of `args.kind`; for kafka, with the `--brokers` / `--node-id` asked for."""
    if args.kind == "kafka" and (args.brokers > 1 or args.node_id is not None):
        return partial(kafka_readiness, brokers=args.brokers, node_id=args.node_id)
    return CHECKS[args.kind]


async def check_command(args: argparse.Namespace) -> int:
    address = _address(args.kind, args.address)
    result = await _check(args)(address, args.timeout_s)
    if not args.quiet:
        if result.ready:
            print(f"{args.kind}: ready ({result.detail})")
        else:
            print(f"{args.kind}: not ready: {result.detail}", file=sys.stderr)
    return 0 if result.ready else EXIT_NOT_READY


async def wait_command(args: argparse.Namespace) -> int:
    name: str = args.name or args.kind
    pid: int | None = args.pid

    def progress(elapsed_s: float, last: Readiness) -> None:
        print(f"{PREFIX}   ... {name}: waiting, {elapsed_s:.0f}s so far ({last.detail})", flush=True)

    result = await wait_until_ready(
        partial(_check(args), _address(args.kind, args.address)),
        timeout_s=args.timeout_s,
        alive=(lambda: process_alive(pid)) if pid is not None else (lambda: True),
        interval_s=args.interval_s,
        progress=progress,
    )
    if result.outcome is Outcome.READY:
        return 0
    _print_tails(args.log)
    if result.outcome is Outcome.PROCESS_EXITED:
        _error(f"{name} (pid {pid}) exited during start-up; last check: {result.last.detail}")
        return EXIT_PROCESS_EXITED
    running = f" (pid {pid} still running)" if pid is not None else ""
    _error(f"{name} did not answer within {args.timeout_s:g}s{running}; last check: {result.last.detail}")
    return EXIT_NOT_READY


@dataclass(frozen=True)
class Service:
    """One server as services.sh sees it: its own process, if any, and where else it may be."""

    name: str
    check: Callable[[str], Awaitable[Readiness]]
    local: str
    pid: int | None = None
    started_at: str | None = None
    external: str | None = None
    external_label: str | None = None


async def service_status(service: Service) -> tuple[bool, str]:
    """Whether the server answers, and one line that says where and who started it."""
    if service.pid is not None:
        address = service.started_at or service.local
        result = await service.check(address)
        if result.ready:
            return True, f"up at {address} (pid {service.pid})"
        return False, (
            f"starting or unhealthy: pid {service.pid} runs but {address} does not answer: {result.detail}"
        )
    if service.external and (await service.check(service.external)).ready:
        label = service.external_label or service.external
        return True, f"up at {label} (external, not started by this script)"
    result = await service.check(service.local)
    if result.ready:
        return True, f"up at {service.local} (not started by this script)"
    return False, f"down: {result.detail}"


async def status_command(args: argparse.Namespace) -> int:
    def bound(kind: str) -> Callable[[str], Awaitable[Readiness]]:
        return lambda address: CHECKS[kind](address, args.timeout_s)

    if args.kafka_node:
        kafka = [_node_service(node, bound("kafka")) for node in args.kafka_node]
    elif args.kafka_local:
        kafka = [
            Service(
                "kafka",
                bound("kafka"),
                args.kafka_local,
                args.kafka_pid,
                args.kafka_addr,
                os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            )
        ]
    else:
        _usage_error("status needs --kafka-local or --kafka-node")
    services = [
        *kafka,
        Service(
            "ferretdb",
            bound("mongo"),
            args.mongo_local,
            args.mongo_pid,
            args.mongo_addr,
            os.environ.get("MONGODB_URL") or None,
            external_label="MONGODB_URL",  # it may hold a password
        ),
    ]
    results = await asyncio.gather(*(service_status(s) for s in services))
    width = max(10, *(len(s.name) + 2 for s in services))
    for service, (_, line) in zip(services, results, strict=True):
        print(f"{service.name + ':':<{width}}{line}")
    healthy = all(ok for ok, _ in results)
    if args.kafka_node:
        addresses = ",".join(service.started_at or service.local for service in kafka)
        cluster = await kafka_readiness(addresses, args.timeout_s, brokers=args.kafka_brokers)
        state = "" if cluster.ready else "not ready: "
        print(f"{'cluster:':<{width}}{state}{cluster.detail} (of {args.kafka_brokers} nodes)")
        healthy = healthy and cluster.ready
    return 0 if healthy else EXIT_NOT_READY


def _node_service(spec: str, check: Callable[[str], Awaitable[Readiness]]) -> Service:
    """`NAME=ADDRESS[,PID]`, one node of a cluster, as `--kafka-node` gives it."""
    name, sep, rest = spec.partition("=")
    address, _, pid = rest.partition(",")
    if not sep or not name or not address or (pid and not pid.isdigit()):
        _usage_error(f"expected NAME=ADDRESS[,PID], got {spec!r}")
    return Service(name, check, address, int(pid) if pid else None, address if pid else None)


async def render_config_command(args: argparse.Namespace) -> int:
    values = dict(_assignment(item) for item in args.values)
    try:
        text = render_properties(args.template.read_text(), values)
    except TemplateError as error:
        _error(f"{args.template}: {error}")
        return EXIT_NOT_READY
    write_atomically(args.output, text)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts.devservices", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    kinds = sorted(CHECKS)

    check = sub.add_parser("check", help="one readiness check")
    check.add_argument("kind", choices=kinds)
    check.add_argument(
        "address",
        nargs="?",
        help="bootstrap servers, MongoDB URL or HOST:PORT; "
        "kafka and mongo default to $KAFKA_BOOTSTRAP_SERVERS and $MONGODB_URL",
    )
    check.add_argument("--timeout-s", type=float, default=3.0)
    check.add_argument("--quiet", action="store_true", help="print nothing, only set the exit status")
    _cluster_arguments(check)
    check.set_defaults(command=check_command)

    wait = sub.add_parser("wait", help="check until ready, the process exits, or the deadline passes")
    wait.add_argument("kind", choices=kinds)
    wait.add_argument("address", nargs="?")
    wait.add_argument("--name", help="what to call the server in messages")
    wait.add_argument("--pid", type=int, help="stop waiting when this process exits")
    wait.add_argument("--timeout-s", type=float, required=True)
    wait.add_argument("--interval-s", type=float, default=0.3)
    wait.add_argument("--log", type=Path, action="append", default=[], help="print its tail on failure")
    _cluster_arguments(wait)
    wait.set_defaults(command=wait_command)

    status = sub.add_parser("status", help="say whether each server answers; exit 0 only if all do")
    status.add_argument("--kafka-local", help="where the script's broker listens")
    status.add_argument("--kafka-pid", type=int, help="pid of the broker the script started")
    status.add_argument("--kafka-addr", help="address the script started it at")
    status.add_argument("--mongo-local", required=True)
    status.add_argument("--mongo-pid", type=int)
    status.add_argument("--mongo-addr")
    status.add_argument(
        "--kafka-node",
        action="append",
        default=[],
        metavar="NAME=ADDRESS[,PID]",
        help="one node of a cluster (instead of --kafka-local); PID if the script started it",
    )
    status.add_argument("--kafka-brokers", type=int, default=1, help="live brokers a cluster must report")
    status.add_argument("--timeout-s", type=float, default=3.0)
    status.set_defaults(command=status_command)

    render = sub.add_parser("render-config", help="replace @NAME@ tokens in a .properties template")
    render.add_argument("template", type=Path)
    render.add_argument("output", type=Path)
    render.add_argument("values", nargs="*", metavar="NAME=VALUE")
    render.set_defaults(command=render_config_command)
    return parser


def _cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--brokers", type=int, default=1, help="kafka: live brokers needed (a cluster)")
    parser.add_argument("--node-id", type=int, help="kafka: this node must be among the live brokers")


def _address(kind: str, given: str | None) -> str:
    if given:
        return given
    variable = ADDRESS_ENV.get(kind)
    value = os.environ.get(variable, "") if variable else ""
    if not value:
        where = f" and ${variable} is not set" if variable else ""
        _usage_error(f"no address given for {kind}{where}")
    return value


def _assignment(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name:
        _usage_error(f"expected NAME=VALUE, got {item!r}")
    return name, value


def _print_tails(paths: Sequence[Path]) -> None:
    for path in paths:
        try:
            with path.open(errors="replace") as file:
                tail = deque(file, maxlen=LOG_TAIL_LINES)
        except OSError:
            continue
        if tail:
            print(f"==> last lines of {path} <==", file=sys.stderr)
            sys.stderr.writelines(tail)


def _error(message: str) -> None:
    print(f"{PREFIX} ERROR: {message}", file=sys.stderr)


def _usage_error(message: str) -> NoReturn:
    _error(message)
    raise SystemExit(EXIT_USAGE)
