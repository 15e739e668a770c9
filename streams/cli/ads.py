"""`ads cost --since 24h`: the ad jobs that ended in a span, their tokens and estimated cost by model."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from rich.table import Table
from rich.text import Text

from processors.ads.cost import DEAD_LETTERED, FAILED, FIELDS, SUCCEEDED, CostReport, ModelCost, summarize
from processors.errors import JobError
from processors.store import Document
from streams.cli.context import Context, store_failed
from streams.cli.output import emit_json, fail, stdout
from streams.cli.since import parse_since
from streams.cli.story import ADS

app = typer.Typer(help="What the ad jobs cost.", no_args_is_help=True)
Json = Annotated[bool, typer.Option("--json", help="one JSON document, for scripts")]
NO_PRICE = "no price set"
NO_MODEL = "(no model)"


@app.command("cost")
def cost(
    since: Annotated[
        str, typer.Option("--since", help="completed this long ago at most: 30m, 24h, 7d")
    ] = "24h",
    as_json: Json = False,
) -> None:
    """Terminal ad jobs by model: jobs by outcome, model calls, tokens and, where
    OPENAI_PRICES prices the model, the estimated cost in total and per 1,000 ads."""
    try:
        span = parse_since(since)
    except ValueError as error:
        fail(f"--since: {error}", 2)
    context = Context.load()
    since_at = datetime.now(UTC) - span
    try:
        documents = asyncio.run(_read(context, since_at))
    except (PyMongoError, JobError) as error:
        store_failed(error)
    report = summarize(documents, context.settings.openai.prices)
    if as_json:
        emit_json({"since": since, "since_at": since_at, **report.as_json()})
        return
    _render(report, since, since_at)


async def _read(context: Context, since_at: datetime) -> list[Document]:
    async with context.store() as database:
        return await read_ended(database, since_at)


async def read_ended(database: AsyncDatabase[Document], since_at: datetime) -> list[Document]:
    """The cost fields of every ads document completed at or after `since_at`: one `find`.

    FerretDB scans the collection for it: about 2.6 s for 10,000 documents here, fine
    for an operator's command (the projection saves a third of it)."""
    projection: dict[str, Any] = dict.fromkeys(FIELDS, True) | {"_id": False}
    cursor = database[ADS].find({"completed_at": {"$gte": since_at}}, projection)
    return await cursor.to_list()


def _render(report: CostReport, since: str, since_at: datetime) -> None:
    console = stdout()
    if not report.models:
        console.print(f"no ad jobs ended in the last {since} (since {_when(since_at)})", markup=False)
        return
    table = Table(
        title=f"ad jobs ended in the last {since} (since {_when(since_at)}), by model",
        title_justify="left",
    )
    table.add_column("model")
    for column in (SUCCEEDED, FAILED, DEAD_LETTERED, "calls", "input tok", "output tok", "total tok"):
        table.add_column(column, justify="right")
    for column in ("cost USD", "per 1k jobs", "per 1k ads"):
        table.add_column(column, justify="right")
    for row in report.models:
        _add(table, _model(row), row, row.cost_usd, row.per_1000_jobs_usd, row.per_1000_succeeded_usd)
    if len(report.models) > 1:
        table.add_section()
        _add(
            table,
            "all models",
            report.total,
            report.total_cost_usd,
            report.total_per_1000_jobs_usd,
            report.total_per_1000_succeeded_usd,
            partial=not report.complete,
        )
    console.print(table)
    notes = [
        "per 1k jobs: the cost over every job that ended (succeeded, failed or dead-lettered); "
        "per 1k ads: over the succeeded jobs only.",
        "Tokens are every call a job paid for: all attempts, repairs and replays. "
        "Prices: OPENAI_PRICES, USD per million tokens.",
    ]
    others = sorted({status for row in report.models for status in row.jobs_by_status} - set(_STATUSES))
    if others:
        notes.append(f"also counted, with no column: status {', '.join(others)}.")
    for row in report.models:
        if row.priced_as is not None and row.priced_as != row.model:
            notes.append(f"{row.model} is priced as {row.priced_as}.")
    unpriced = [_model(row) for row in report.unpriced]
    if unpriced:
        notes.append(
            f"{NO_PRICE} for {', '.join(unpriced)}: add it to OPENAI_PRICES, e.g. "
            '{"gpt-4o-mini": {"input_per_1m": 0.15, "output_per_1m": 0.60}}.'
        )
    for note in notes:
        console.print(note, markup=False, style="dim")


_STATUSES = (SUCCEEDED, FAILED, DEAD_LETTERED)


def _add(
    table: Table,
    label: str,
    row: ModelCost,
    cost_usd: float | None,
    per_jobs_usd: float | None,
    per_ads_usd: float | None,
    *,
    partial: bool = False,
) -> None:
    counts = [row.jobs_by_status.get(status, 0) for status in _STATUSES]
    tokens = [row.model_calls, row.input_tokens, row.output_tokens, row.total_tokens]
    if cost_usd is None:
        money = [NO_PRICE if row.total_tokens else "", "", ""]
    else:
        money = [
            _usd(cost_usd) + (" + unpriced" if partial else ""),
            _usd(per_jobs_usd),
            _usd(per_ads_usd),
        ]
    cells = [label, *(f"{n:,}" for n in counts + tokens), *money]
    table.add_row(*(Text(cell) for cell in cells))


def _model(row: ModelCost) -> str:
    return NO_MODEL if row.model is None else row.model


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:,.2f}" if value >= 100 else f"${value:.4f}"


def _when(value: datetime) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"
