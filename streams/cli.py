"""Command line: publish jobs and manage dead letters.

python -m streams.cli send-otp --to ada@example.com --code 123456
python -m streams.cli welcome --to ada@example.com --name "Ada Lovelace"
python -m streams.cli verify-link --to ada@example.com --url https://app.example.com/verify?t=abc
python -m streams.cli dlq list
python -m streams.cli dlq show 0:12
python -m streams.cli dlq replay --reason attempts-exhausted --dry-run
python -m streams.cli job show otp-42
python -m streams.cli erase --email ada@example.com
python -m streams.cli suppressions list | add ADDRESS [--reason manual] | remove ADDRESS
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import KafkaError
from pydantic import ValidationError
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from live.links import token_url
from processors.ads.jobs import AdJob, Notify, Product
from processors.ads.platforms import Platform
from processors.decoding import describe_validation_error
from processors.email.delivery_events import DeliveryEvents
from processors.email.jobs import SendOtpJob, VerificationLinkJob, WelcomeEmailJob
from processors.email.ledger import DeliveryLedger
from processors.email.status import job_status
from processors.email.suppressions import CLI_SOURCE, SuppressionReason, Suppressions
from processors.email.suppressions import COLLECTION as SUPPRESSIONS
from processors.erasure import Erased, Eraser
from processors.errors import JobError
from streams.admin import describe_topic_configs
from streams.dlq import DeadLetterRecord, Filter, read_dead_letters, replay, summarize
from streams.producer import new_job_id, publish_ad_job, publish_email_job
from streams.retention import DESCRIBED_KEYS, Retention
from streams.security import client_kwargs
from streams.settings import Settings, SettingsError, get_settings
from streams.topics import TopicNames

REDACTED_FIELDS = ("code", "verification_url")
LEDGER_KEPT = "two to three days"


def _parser(topics: TopicNames) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m streams.cli",
        description="Publish jobs; manage dead letters and suppressions; erase an address.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    otp = commands.add_parser("send-otp", help="publish a SEND_OTP email job; prints the job_id")
    otp.add_argument("--to", required=True)
    otp.add_argument("--code", required=True)
    otp.add_argument("--expires-in-minutes", type=int, default=10)
    otp.add_argument("--job-id")

    welcome = commands.add_parser("welcome", help="publish a WELCOME_EMAIL job; prints the job_id")
    welcome.add_argument("--to", required=True)
    welcome.add_argument("--name", required=True)
    welcome.add_argument("--job-id")

    link = commands.add_parser("verify-link", help="publish a VERIFICATION_LINK job; prints the job_id")
    link.add_argument("--to", required=True)
    link.add_argument("--url", required=True)
    link.add_argument("--name")
    link.add_argument("--expires-in-hours", type=int, default=24)
    link.add_argument("--job-id")

    ad = commands.add_parser("ad", help="publish an ad-copy job; prints the job_id")
    ad.add_argument("--user", required=True, help="the user's id")
    ad.add_argument("--product", required=True, help="product name")
    ad.add_argument("--description", required=True, help="product description")
    ad.add_argument("--url", help="product page (https)")
    ad.add_argument("--audience", default="people who would enjoy this product")
    ad.add_argument("--tone", default="friendly")
    ad.add_argument("--language", default="en")
    ad.add_argument("--platform", default="GOOGLE_SEARCH", choices=[p.value for p in Platform])
    ad.add_argument("--variants", type=int, default=3)
    ad.add_argument("--email", help="send an AD_READY email here when the copy is ready")
    ad.add_argument("--live", action="store_true", help="push the result to the user's WebSocket page")
    ad.add_argument("--job-id")

    token = commands.add_parser("ws-token", help="print a link to the notifier page for a user")
    token.add_argument("--user", required=True)
    token.add_argument("--base-url", default="http://127.0.0.1:8001")

    dlq = commands.add_parser("dlq", help="list, show or replay dead letters")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    dead_letter_topics = list(topics.dead_letter_topics)
    for name, help_text in (
        ("list", "counts by reason and type, and one line per dead letter"),
        ("show", "one dead letter with its headers"),
        ("replay", "publish dead letters to their origin topic again, attempts reset"),
    ):
        sub = dlq_commands.add_parser(name, help=help_text)
        sub.add_argument("--topic", default=topics.email_jobs.dlq, choices=dead_letter_topics)
        if name == "show":
            sub.add_argument("ref", help="PARTITION:OFFSET, as `dlq list` prints it")
            sub.add_argument("--raw", action="store_true", help="print OTP codes and link tokens too")
        else:
            sub.add_argument("--reason", help="only this x-dlq-reason")
            sub.add_argument("--type", dest="job_type", help="only this job type")
            sub.add_argument("--since", type=datetime.fromisoformat, help="failed at or after (ISO 8601)")
            sub.add_argument("--until", type=datetime.fromisoformat, help="failed before (ISO 8601)")
        if name == "replay":
            sub.add_argument("--dry-run", action="store_true", help="print what would be replayed")

    job = commands.add_parser("job", help="what happened to an email job")
    job_commands = job.add_subparsers(dest="job_command", required=True)
    show = job_commands.add_parser(
        "show", help="its ledger entry: attempts, errors, Resend's id and delivery events"
    )
    show.add_argument("job_id")

    erase = commands.add_parser(
        "erase", help="delete an address from the store; say what Kafka still holds, and until when"
    )
    erase.add_argument("--email", required=True, help="the address to erase")

    suppressions = commands.add_parser("suppressions", help="list, add or remove suppressed addresses")
    suppression_commands = suppressions.add_subparsers(dest="suppressions_command", required=True)
    suppression_commands.add_parser("list", help="every suppressed address, oldest first")
    add = suppression_commands.add_parser("add", help="send no more email to an address")
    add.add_argument("address")
    add.add_argument(
        "--reason", default=SuppressionReason.MANUAL.value, choices=[r.value for r in SuppressionReason]
    )
    remove = suppression_commands.add_parser("remove", help="send email to an address again")
    remove.add_argument("address")
    return parser


def _redacted(value: bytes, raw: bool) -> str:
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return value.decode("utf-8", "replace") if raw else f"<{len(value)} bytes, not JSON>"
    if isinstance(data, dict) and not raw:
        data = {k: ("<redacted>" if k in REDACTED_FIELDS else v) for k, v in data.items()}
    return json.dumps(data, indent=2, ensure_ascii=False)


def _filter(args: argparse.Namespace) -> Filter:
    def aware(value: datetime | None) -> datetime | None:
        return value.astimezone() if value is not None and value.tzinfo is None else value

    return Filter(
        reason=args.reason, job_type=args.job_type, since=aware(args.since), until=aware(args.until)
    )


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\rreplaying [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


async def _dlq(args: argparse.Namespace, settings: Settings, topics: TopicNames) -> int:
    bootstrap, options = settings.kafka.bootstrap_servers, client_kwargs(settings.kafka)
    target = next(t.redeliver for t in topics.job_topics if t.dlq == args.topic)
    letters = await read_dead_letters(bootstrap, args.topic, client_options=options)
    if args.dlq_command == "show":
        found = [letter for letter in letters if letter.ref == args.ref]
        if not found:
            print(f"no dead letter {args.ref} in {args.topic}", file=sys.stderr)
            return 1
        _print_one(found[0], raw=args.raw)
        return 0
    selected = [letter for letter in letters if _filter(args).matches(letter)]
    if args.dlq_command == "list":
        print(f"{len(selected)} dead letters in {args.topic}")
        for (reason, job_type), count in sorted(summarize(selected).items()):
            print(f"  {count:6d}  {reason:<20} {job_type}")
        for letter in selected:
            when = f"{letter.failed_at:%Y-%m-%d %H:%M:%S}Z"
            print(f"{letter.ref:>10}  {when}  {letter.reason:<20} {letter.job_type}")
        return 0
    if args.dry_run:
        for letter in selected:
            print(f"would replay {letter.ref} ({letter.reason}, {letter.job_type}) to {target}")
        print(f"{len(selected)} dead letters would be replayed (dry run)")
        return 0
    count = await replay(bootstrap, selected, target=target, progress=_progress, client_options=options)
    print(f"replayed {count} dead letters; the ledger keeps already-sent jobs from being sent twice")
    return 0


def _print_one(letter: DeadLetterRecord, *, raw: bool) -> None:
    print(f"{letter.record.topic} {letter.ref}  key={letter.record.key!r}")
    for name, value in sorted(letter.record.headers.items()):
        print(f"  {name}: {value}")
    print(_redacted(letter.record.value, raw))


@asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.store.url.get_secret_value(),
        serverSelectionTimeoutMS=settings.store.timeout_ms,
        tz_aware=True,
    )
    try:
        yield client[settings.store.database]
    finally:
        await client.close()


def _store_failed(error: Exception) -> int:
    # The type only: a driver message may quote the URL, credentials included.
    reason = error.message if isinstance(error, JobError) else type(error).__name__
    print(f"cannot reach the store at MONGODB_URL: {reason}", file=sys.stderr)
    return 1


async def _suppressions(args: argparse.Namespace, settings: Settings) -> int:
    refresh_s = settings.email.suppression_refresh_s
    async with _store(settings) as database:
        suppressions = Suppressions(database[SUPPRESSIONS], refresh_s=refresh_s)
        try:
            if args.suppressions_command == "list":
                entries = await suppressions.entries()
                print(f"{len(entries)} suppressed addresses")
                for entry in entries:
                    when = f"{entry.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"
                    print(f"{entry.address}  {entry.reason.value:<10} {when}  {entry.source}")
            elif args.suppressions_command == "add":
                now = datetime.now(UTC)
                added = await suppressions.add(args.address, reason=args.reason, source=CLI_SOURCE, now=now)
                print(
                    f"{args.address}: suppressed; workers stop sending to it within {refresh_s:g} s"
                    if added
                    else f"{args.address}: already suppressed"
                )
            elif await suppressions.remove(args.address):
                print(f"{args.address}: removed; workers send to it again within {refresh_s:g} s")
            else:
                print(f"{args.address}: was not suppressed")
        except ValueError as error:
            print(f"{args.address}: {error}", file=sys.stderr)
            return 2
        except (PyMongoError, JobError) as error:
            return _store_failed(error)
    return 0


async def _job(args: argparse.Namespace, settings: Settings) -> int:
    async with _store(settings) as database:
        ledger = DeliveryLedger(database["email_deliveries"], lease_s=settings.email.send_lease_s)
        try:
            status = await job_status(ledger, DeliveryEvents(database), args.job_id)
        except (PyMongoError, JobError) as error:
            return _store_failed(error)
        finally:
            await ledger.aclose()
    if status is None:
        print(f"no email job {args.job_id} in the ledger (kept {LEDGER_KEPT})", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2, default=str, sort_keys=True))
    return 0


async def _erase(args: argparse.Namespace, settings: Settings, topics: TopicNames) -> int:
    async with _store(settings) as database:
        suppressions = Suppressions(database[SUPPRESSIONS], refresh_s=settings.email.suppression_refresh_s)
        eraser = Eraser(database, suppressions=suppressions, events=DeliveryEvents(database))
        try:
            erased = await eraser.erase(args.email)
        except ValueError as error:
            print(f"{args.email}: {error}", file=sys.stderr)
            return 2
        except (PyMongoError, JobError) as error:
            return _store_failed(error)
    _print_erased(args.email, erased)
    return await _print_kafka_retention(settings, topics, now=datetime.now(UTC))


async def _print_kafka_retention(settings: Settings, topics: TopicNames, *, now: datetime) -> int:
    try:
        configs = await describe_topic_configs(
            settings.kafka.bootstrap_servers,
            topics.all,
            DESCRIBED_KEYS,
            client_options=client_kwargs(settings.kafka),
        )
    except KafkaError as error:
        print(f"cannot read the topics' retention from Kafka: {type(error).__name__}", file=sys.stderr)
        return 1
    print("\nKafka can't delete single records. What these topics hold about the address is kept:")
    width = max(map(len, topics.all))
    for topic in topics.all:
        if topic not in configs:
            print(f"  {topic:<{width}}  (no such topic)")
            continue
        retention = Retention.from_configs(topic, configs[topic])
        until = retention.kept_until(now)
        if until is None or retention.retention_ms is None:
            print(f"  {topic:<{width}}  never: no deletion by age; delete the topic to remove them")
            continue
        span = f"retention {_hours(retention.retention_ms)} + segment {_hours(retention.segment_ms)}"
        print(f"  {topic:<{width}}  until at most {until:%Y-%m-%d %H:%M}Z  ({span})")
    print(
        "Jobs to this address still queued or retrying may write new records, and send email "
        "again: run erase again once they are done. Resend keeps its own logs of sent email."
    )
    return 0


def _hours(ms: int) -> str:
    return f"{ms / 3_600_000:g} h"


def _print_erased(address: str, erased: Erased) -> None:
    print(
        f"erased {address}: {erased.total} documents, of {len(erased.email_jobs)} email jobs "
        f"and {len(erased.ad_jobs)} ad jobs"
    )
    for collection, count in erased.deleted.items():
        print(f"  {count:6d}  {collection}")


async def _main(argv: Sequence[str] | None, settings: Settings) -> int:
    topics = TopicNames.with_prefix(settings.kafka.topic_prefix)
    args = _parser(topics).parse_args(argv)
    bootstrap = settings.kafka.bootstrap_servers
    prefix = settings.kafka.topic_prefix
    options = client_kwargs(settings.kafka)
    if args.command == "dlq":
        return await _dlq(args, settings, topics)
    if args.command == "erase":
        return await _erase(args, settings, topics)
    if args.command == "job":
        return await _job(args, settings)
    if args.command == "suppressions":
        return await _suppressions(args, settings)
    if args.command == "ws-token":
        secret = settings.live.token_secret
        if secret is None:
            raise SettingsError("invalid configuration: WS_TOKEN_SECRET is not set")
        print(token_url(args.user, args.base_url, secret=secret, ttl_s=settings.live.token_ttl_s))
        return 0
    if args.command == "ad":
        try:
            ad_job = AdJob(
                job_id=args.job_id or new_job_id("ad"),
                user_id=args.user,
                product=Product(name=args.product, description=args.description, url=args.url),
                audience=args.audience,
                tone=args.tone,
                language=args.language,
                platform=Platform(args.platform),
                variants=args.variants,
                notify=Notify(email=args.email, live=args.live),
            )
        except ValidationError as error:
            print(f"invalid job: {describe_validation_error(error)}", file=sys.stderr)
            return 2
        print(
            await publish_ad_job(
                ad_job, bootstrap_servers=bootstrap, topic_prefix=prefix, client_options=options
            )
        )
        return 0
    try:
        if args.command == "send-otp":
            job: SendOtpJob | WelcomeEmailJob | VerificationLinkJob = SendOtpJob(
                type="SEND_OTP",
                job_id=args.job_id or new_job_id("otp"),
                to=args.to,
                code=args.code,
                expires_in_minutes=args.expires_in_minutes,
            )
        elif args.command == "welcome":
            job = WelcomeEmailJob(
                type="WELCOME_EMAIL", job_id=args.job_id or new_job_id("welcome"), to=args.to, name=args.name
            )
        else:
            job = VerificationLinkJob(
                type="VERIFICATION_LINK",
                job_id=args.job_id or new_job_id("verify"),
                to=args.to,
                name=args.name,
                verification_url=args.url,
                expires_in_hours=args.expires_in_hours,
            )
    except ValidationError as error:
        print(f"invalid job: {describe_validation_error(error)}", file=sys.stderr)
        return 2
    print(
        await publish_email_job(job, bootstrap_servers=bootstrap, topic_prefix=prefix, client_options=options)
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(_main(argv, get_settings()))


if __name__ == "__main__":
    raise SystemExit(main())
