"""Command line: publish jobs and manage dead letters.

python -m streams.cli send-otp --to ada@example.com --code 123456
python -m streams.cli welcome --to ada@example.com --name "Ada Lovelace"
python -m streams.cli verify-link --to ada@example.com --url https://app.example.com/verify?t=abc
python -m streams.cli dlq list
python -m streams.cli dlq show 0:12
python -m streams.cli dlq replay --reason attempts-exhausted --dry-run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import datetime

from pydantic import ValidationError

from live.links import token_url
from processors.ads.jobs import AdJob, Notify, Product
from processors.ads.platforms import Platform
from processors.decoding import describe_validation_error
from processors.email.jobs import SendOtpJob, VerificationLinkJob, WelcomeEmailJob
from streams.dlq import DeadLetterRecord, Filter, read_dead_letters, replay, summarize
from streams.producer import new_job_id, publish_ad_job, publish_email_job
from streams.security import client_kwargs
from streams.settings import Settings, SettingsError, get_settings
from streams.topics import TopicNames

REDACTED_FIELDS = ("code", "verification_url")


def _parser(topics: TopicNames) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m streams.cli", description="Publish jobs; manage dead letters."
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


async def _main(argv: Sequence[str] | None, settings: Settings) -> int:
    topics = TopicNames.with_prefix(settings.kafka.topic_prefix)
    args = _parser(topics).parse_args(argv)
    bootstrap = settings.kafka.bootstrap_servers
    prefix = settings.kafka.topic_prefix
    options = client_kwargs(settings.kafka)
    if args.command == "dlq":
        return await _dlq(args, settings, topics)
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
