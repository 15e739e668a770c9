"""`dlq list | show | replay`: the dead letters of one topic."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated, Any

import typer
from aiokafka.errors import KafkaError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from streams.cli.context import Context, kafka_failed
from streams.cli.output import emit_json, fail, line, stderr
from streams.cli.redaction import record_value
from streams.dlq import DeadLetterRecord, Filter, read_dead_letters, replay, summarize
from streams.retry import headers as h

app = typer.Typer(help="List, show or replay dead letters.", no_args_is_help=True)

Topic = Annotated[
    str | None, typer.Option("--topic", help="a dead-letter topic (default: the email-jobs one)")
]
Reason = Annotated[str | None, typer.Option("--reason", help="only this x-dlq-reason")]
JobType = Annotated[str | None, typer.Option("--type", help="only this job type")]
Since = Annotated[
    datetime | None,
    typer.Option("--since", help="failed at or after (ISO 8601)", parser=datetime.fromisoformat),
]
Until = Annotated[
    datetime | None, typer.Option("--until", help="failed before (ISO 8601)", parser=datetime.fromisoformat)
]
Json = Annotated[bool, typer.Option("--json", help="one JSON document, for scripts")]


@app.command("list")
def list_(
    topic: Topic = None,
    reason: Reason = None,
    job_type: JobType = None,
    since: Since = None,
    until: Until = None,
    as_json: Json = False,
) -> None:
    """Counts by reason and type, and one line per dead letter."""
    context, name = _topic(topic)
    selected = [
        letter for letter in _read(context, name) if _filter(reason, job_type, since, until).matches(letter)
    ]
    if as_json:
        emit_json(
            {
                "topic": name,
                "count": len(selected),
                "by_reason": [
                    {"reason": r, "type": t, "count": n} for (r, t), n in sorted(summarize(selected).items())
                ],
                "dead_letters": [describe(letter) for letter in selected],
            }
        )
        return
    line(f"{len(selected)} dead letters in {name}")
    for (why, what), count in sorted(summarize(selected).items()):
        line(f"  {count:6d}  {why:<20} {what}")
    for letter in selected:
        line(
            f"{letter.ref:>10}  {letter.failed_at:%Y-%m-%d %H:%M:%S}Z  {letter.reason:<20} {letter.job_type}"
        )


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="PARTITION:OFFSET, as `dlq list` prints it")],
    topic: Topic = None,
    raw: Annotated[bool, typer.Option("--raw", help="print OTP codes and link tokens too")] = False,
    as_json: Json = False,
) -> None:
    """One dead letter with its headers."""
    context, name = _topic(topic)
    found = [letter for letter in _read(context, name) if letter.ref == ref]
    if not found:
        fail(f"no dead letter {ref} in {name}")
    letter = found[0]
    value = record_value(letter.record.value, raw=raw)
    if as_json:
        emit_json({**describe(letter), "key": _key(letter), "headers": letter.record.headers, "value": value})
        return
    line(f"{letter.record.topic} {letter.ref}  key={letter.record.key!r}")
    for header, text in sorted(letter.record.headers.items()):
        line(f"  {header}: {text}")
    line(value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False))


@app.command("replay")
def replay_(
    topic: Topic = None,
    reason: Reason = None,
    job_type: JobType = None,
    since: Since = None,
    until: Until = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would be replayed")] = False,
) -> None:
    """Publish dead letters to their origin topic again, attempts reset."""
    context, name = _topic(topic)
    target = next(t.redeliver for t in context.topics.job_topics if t.dlq == name)
    selected = [
        letter for letter in _read(context, name) if _filter(reason, job_type, since, until).matches(letter)
    ]
    if dry_run:
        for letter in selected:
            line(f"would replay {letter.ref} ({letter.reason}, {letter.job_type}) to {target}")
        line(f"{len(selected)} dead letters would be replayed (dry run)")
        return
    with Progress(
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr(),
    ) as progress:
        task = progress.add_task("replay", total=len(selected))

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            count = asyncio.run(
                replay(
                    context.bootstrap,
                    selected,
                    target=target,
                    progress=advance,
                    client_options=context.kafka_options,
                )
            )
        except KafkaError as error:
            kafka_failed(error)
    line(f"replayed {count} dead letters; the ledger keeps already-sent jobs from being sent twice")


def describe(letter: DeadLetterRecord) -> dict[str, Any]:
    """What `dlq list --json` says of a dead letter: its headers' story, never its value."""
    headers = letter.record.headers
    return {
        "topic": letter.record.topic,
        "ref": letter.ref,
        "partition": letter.record.partition,
        "offset": letter.record.offset,
        "failed_at": letter.failed_at,
        "reason": letter.reason,
        "type": letter.job_type,
        "attempts": _int(headers.get(h.ATTEMPT)),
        "error_class": headers.get(h.ERROR_CLASS),
        "error_message": headers.get(h.ERROR_MESSAGE),
        "origin_topic": letter.origin_topic,
    }


def _topic(topic: str | None) -> tuple[Context, str]:
    context = Context.load()
    choices = context.topics.dead_letter_topics
    name = topic or context.topics.email_jobs.dlq
    if name not in choices:
        fail(f"--topic: {name!r} is not a dead-letter topic; one of {', '.join(choices)}", 2)
    return context, name


def _read(context: Context, topic: str) -> list[DeadLetterRecord]:
    try:
        return asyncio.run(read_dead_letters(context.bootstrap, topic, client_options=context.kafka_options))
    except KafkaError as error:
        kafka_failed(error)


def _filter(
    reason: str | None, job_type: str | None, since: datetime | None, until: datetime | None
) -> Filter:
    def aware(value: datetime | None) -> datetime | None:
        return value.astimezone() if value is not None and value.tzinfo is None else value

    return Filter(reason=reason, job_type=job_type, since=aware(since), until=aware(until))


def _key(letter: DeadLetterRecord) -> str | None:
    key = letter.record.key
    return None if key is None else key.decode("utf-8", "replace")


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
