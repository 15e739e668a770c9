"""`job show JOB_ID` and `jobs --to ADDRESS --since 1h`: what happened to a job, to a recipient's jobs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from aiokafka.errors import KafkaError
from pymongo.errors import PyMongoError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from processors.errors import JobError
from processors.store import Document
from streams.cli.context import Context, kafka_failed, store_failed
from streams.cli.output import emit_json, fail, stdout
from streams.cli.redaction import redact
from streams.cli.since import parse_since
from streams.cli.story import JobStory, gather, recipient_jobs

LEDGER_KEPT = "two to three days"

job_app = typer.Typer(help="What happened to a job.", no_args_is_help=True)
Json = Annotated[bool, typer.Option("--json", help="one JSON document, for scripts")]

# Shown apart, or not at all: the history as the attempts table, the request and copy in short.
_FIRST = ("type", "recipient", "user_id", "platform", "status", "attempts", "created_at", "updated_at")
_APART = {"_id", "job_id", "history", "notes", "events", "request", "variants", "runs"}


@job_app.command("show")
def show(job_id: Annotated[str, typer.Argument(help="the job's job_id")], as_json: Json = False) -> None:
    """Its ledger entry or ads document, every attempt with its error, and whether it
    waits in a retry or dead-letter topic now."""
    context = Context.load()
    try:
        story = asyncio.run(gather(context, job_id))
    except (PyMongoError, JobError) as error:
        store_failed(error)
    except KafkaError as error:
        kafka_failed(error)
    if not story.found:
        fail(
            f"no job {job_id} in the email ledger (kept {LEDGER_KEPT}), the ads store, "
            "or any retry or dead-letter topic"
        )
    if as_json:
        emit_json(story.as_json())
        return
    render_story(stdout(), story)


def jobs(
    to: Annotated[str, typer.Option("--to", help="the recipient's whole address (any case)")],
    since: Annotated[str, typer.Option("--since", help="created this long ago at most: 30m, 1h, 2d")] = "1h",
    as_json: Json = False,
) -> None:
    """A recipient's recent email jobs and their outcomes, from the ledger (no codes)."""
    try:
        span = parse_since(since)
    except ValueError as error:
        fail(f"--since: {error}", 2)
    if "@" not in to:
        fail(f"--to: {to!r} is not an email address", 2)
    context = Context.load()
    try:
        rows = asyncio.run(recipient_jobs(context, to, since=span, now=datetime.now(UTC)))
    except (PyMongoError, JobError) as error:
        store_failed(error)
    if as_json:
        emit_json({"recipient": to.strip(), "since": since, "jobs": rows})
        return
    console = stdout()
    if not rows:
        console.print(f"no email jobs to {to.strip()} in the last {since} (the ledger keeps {LEDGER_KEPT})")
        return
    table = Table(title=f"email jobs to {to.strip()}, last {since}", title_justify="left")
    for column in ("job_id", "type", "status", "attempts", "last error", "sent_at", "delivery"):
        table.add_column(column, no_wrap=column == "job_id")
    for row in rows:
        keys = ("job_id", "type", "status", "attempts", "last_error", "sent_at", "delivery")
        _row(table, *(row[key] for key in keys))
    console.print(table)


def render_story(console: Console, story: JobStory) -> None:
    document = redact(story.document)
    title = f"{story.kind or 'unknown'} job {story.job_id}"
    if story.kind == "email" and document is not None:
        title += f"  {document.get('type')} to {document.get('recipient')}"
    console.print(title, style="bold", markup=False)
    if document is None:
        console.print(f"  not in the email ledger (kept {LEDGER_KEPT}) nor the ads store", markup=False)
    else:
        _fields(console, document)
    attempts = story.attempts()
    if attempts:
        table = Table(title="attempts", title_justify="left")
        for column in ("#", "at", "outcome", "error"):
            table.add_column(column)
        for attempt in attempts:
            error = ": ".join(part for part in (attempt["error"], attempt["error_message"]) if part)
            _row(table, attempt["attempt"], attempt["at"], attempt["outcome"], error)
        console.print(table)
    now = [s for s in story.sightings if s.kind == "dlq" or s.waiting]
    console.print("now", style="bold")
    lines = [s.summary() for s in now] or ["not in any retry or dead-letter topic"]
    for text in lines:
        console.print(f"  {text}", markup=False)
    earlier = [s for s in story.sightings if s not in now]
    if earlier:
        console.print("earlier", style="bold")
    for sighting in earlier:
        console.print(f"  {sighting.summary()}", markup=False)


def _fields(console: Console, document: Document) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    keys = [key for key in _FIRST if key in document]
    keys += [key for key in document if key not in _APART and key not in keys]
    for key in keys:
        _row(grid, f"  {key}", document[key])
    request = document.get("request")
    if isinstance(request, dict):
        product = request.get("product") or {}
        _row(grid, "  product", product.get("name"))
        _row(grid, "  notify", request.get("notify"))
    for number, variant in enumerate(document.get("variants") or [], 1):
        _row(grid, f"  variant {number}", variant.get("headline"))
    for run in document.get("runs") or []:
        _row(grid, f"  run {run.get('run')}", _run_text(run))
    for event in document.get("events") or []:
        detail = " ".join(str(v) for v in (event.get("bounce_type"), event.get("bounce_subtype")) if v)
        _row(grid, "  event", f"{_text(event.get('occurred_at'))}  {event.get('kind')} {detail}".rstrip())
    console.print(grid)


def _run_text(run: dict[str, Any]) -> str:
    """One run of an ad job: `failed OutOfBounds, 2 model calls, 240+61 tokens, 1 attempt, <at>`."""
    usage = run.get("token_usage") or {}
    parts = [
        " ".join(str(part) for part in (run.get("status"), run.get("error_class")) if part),
        f"{run.get('model_calls') or 0} model calls",
        f"{usage.get('input_tokens', 0)}+{usage.get('output_tokens', 0)} tokens",
        f"{run.get('attempts')} attempts",
        _text(run.get("completed_at")),
    ]
    if run.get("replayed_from"):
        parts.append(f"replayed from {run['replayed_from']}")
    return ", ".join(part for part in parts if part)


def _row(table: Table, *values: Any) -> None:
    # Text, not markup: a stored value with brackets prints as it is.
    table.add_row(*(Text(_text(value)) for value in values))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    return str(value)
