"""`erase --email ADDRESS` and `suppressions list | add | remove`: one address in the store."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer
from aiokafka.errors import KafkaError
from pymongo.errors import PyMongoError

from processors.email.delivery_events import DeliveryEvents
from processors.email.suppressions import CLI_SOURCE, SuppressionReason, Suppressions
from processors.email.suppressions import COLLECTION as SUPPRESSIONS
from processors.erasure import Erased, Eraser
from processors.errors import JobError
from streams.admin import describe_topic_configs
from streams.cli.context import Context, store_failed
from streams.cli.output import emit_json, fail, line
from streams.retention import DESCRIBED_KEYS, Retention

T = TypeVar("T")

suppressions_app = typer.Typer(help="List, add or remove suppressed addresses.", no_args_is_help=True)
Address = Annotated[str, typer.Argument(help="an email address")]


def erase(email: Annotated[str, typer.Option("--email", help="the address to erase")]) -> None:
    """Delete an address from the store; say what Kafka still holds, and until when."""
    context = Context.load()
    erased = asyncio.run(_erase(context, email))
    _print_erased(email, erased)
    asyncio.run(_print_kafka_retention(context, now=datetime.now(UTC)))


@suppressions_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document, for scripts")] = False,
) -> None:
    """Every suppressed address, oldest first."""
    entries = asyncio.run(_suppressions(Context.load(), lambda s: s.entries()))
    if as_json:
        emit_json(
            {
                "count": len(entries),
                "suppressions": [
                    {
                        "address": e.address,
                        "reason": e.reason.value,
                        "source": e.source,
                        "created_at": e.created_at.astimezone(UTC),
                    }
                    for e in entries
                ],
            }
        )
        return
    line(f"{len(entries)} suppressed addresses")
    for entry in entries:
        when = f"{entry.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"
        line(f"{entry.address}  {entry.reason.value:<10} {when}  {entry.source}")


@suppressions_app.command("add")
def add(
    address: Address,
    reason: Annotated[SuppressionReason, typer.Option("--reason")] = SuppressionReason.MANUAL,
) -> None:
    """Send no more email to an address."""
    context = Context.load()
    now = datetime.now(UTC)
    added = asyncio.run(
        _suppressions(context, lambda s: s.add(address, reason=reason, source=CLI_SOURCE, now=now), address)
    )
    refresh_s = context.settings.email.suppression_refresh_s
    line(
        f"{address}: suppressed; workers stop sending to it within {refresh_s:g} s"
        if added
        else f"{address}: already suppressed"
    )


@suppressions_app.command("remove")
def remove(address: Address) -> None:
    """Send email to an address again."""
    context = Context.load()
    removed = asyncio.run(_suppressions(context, lambda s: s.remove(address), address))
    refresh_s = context.settings.email.suppression_refresh_s
    line(
        f"{address}: removed; workers send to it again within {refresh_s:g} s"
        if removed
        else f"{address}: was not suppressed"
    )


async def _suppressions(
    context: Context, action: Callable[[Suppressions], Awaitable[T]], address: str = ""
) -> T:
    async with context.store() as database:
        suppressions = Suppressions(
            database[SUPPRESSIONS], refresh_s=context.settings.email.suppression_refresh_s
        )
        try:
            return await action(suppressions)
        except ValueError as error:
            fail(f"{address}: {error}", 2)
        except (PyMongoError, JobError) as error:
            store_failed(error)


async def _erase(context: Context, address: str) -> Erased:
    async with context.store() as database:
        suppressions = Suppressions(
            database[SUPPRESSIONS], refresh_s=context.settings.email.suppression_refresh_s
        )
        eraser = Eraser(database, suppressions=suppressions, events=DeliveryEvents(database))
        try:
            return await eraser.erase(address)
        except ValueError as error:
            fail(f"{address}: {error}", 2)
        except (PyMongoError, JobError) as error:
            store_failed(error)


def _print_erased(address: str, erased: Erased) -> None:
    line(
        f"erased {address}: {erased.total} documents, of {len(erased.email_jobs)} email jobs "
        f"and {len(erased.ad_jobs)} ad jobs"
    )
    for collection, count in erased.deleted.items():
        line(f"  {count:6d}  {collection}")


async def _print_kafka_retention(context: Context, *, now: datetime) -> None:
    topics = context.topics.all
    try:
        configs = await describe_topic_configs(
            context.bootstrap, topics, DESCRIBED_KEYS, client_options=context.kafka_options
        )
    except KafkaError as error:
        fail(f"cannot read the topics' retention from Kafka: {type(error).__name__}")
    line("\nKafka can't delete single records. What these topics hold about the address is kept:")
    width = max(map(len, topics))
    for topic in topics:
        if topic not in configs:
            line(f"  {topic:<{width}}  (no such topic)")
            continue
        retention = Retention.from_configs(topic, configs[topic])
        until = retention.kept_until(now)
        if until is None or retention.retention_ms is None:
            line(f"  {topic:<{width}}  never: no deletion by age; delete the topic to remove them")
            continue
        span = f"retention {_hours(retention.retention_ms)} + segment {_hours(retention.segment_ms)}"
        line(f"  {topic:<{width}}  until at most {until:%Y-%m-%d %H:%M}Z  ({span})")
    line(
        "Jobs to this address still queued or retrying may write new records, and send email "
        "again: run erase again once they are done. Resend keeps its own logs of sent email."
    )


def _hours(ms: int) -> str:
    return f"{ms / 3_600_000:g} h"
