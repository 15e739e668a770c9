"""Publishing jobs: `send-otp`, `welcome`, `verify-link`, `ad`; and `ws-token`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from live.links import token_url
from processors.ads.jobs import AdJob, Notify, Product
from processors.ads.platforms import Platform
from processors.decoding import describe_validation_error
from processors.email.jobs import SendOtpJob, VerificationLinkJob, WelcomeEmailJob
from streams.cli.context import Context, kafka_failed
from streams.cli.output import fail, line
from streams.producer import new_job_id, publish_ad_job, publish_email_job
from streams.settings import SettingsError

JobId = Annotated[str | None, typer.Option("--job-id", help="the idempotency key (default: a new one)")]
To = Annotated[str, typer.Option("--to", help="the recipient's address")]

T = TypeVar("T")


def register(app: typer.Typer) -> None:
    app.command("send-otp")(send_otp)
    app.command("welcome")(welcome)
    app.command("verify-link")(verify_link)
    app.command("ad")(ad)
    app.command("ws-token")(ws_token)


def send_otp(
    to: To,
    code: Annotated[str, typer.Option("--code", help="4-10 digits")],
    expires_in_minutes: Annotated[int, typer.Option("--expires-in-minutes")] = 10,
    job_id: JobId = None,
) -> None:
    """Publish a SEND_OTP email job; prints the job_id."""
    _publish(
        lambda: SendOtpJob(
            type="SEND_OTP",
            job_id=job_id or new_job_id("otp"),
            to=to,
            code=code,
            expires_in_minutes=expires_in_minutes,
        ),
        publish_email_job,
    )


def welcome(to: To, name: Annotated[str, typer.Option("--name")], job_id: JobId = None) -> None:
    """Publish a WELCOME_EMAIL job; prints the job_id."""
    _publish(
        lambda: WelcomeEmailJob(
            type="WELCOME_EMAIL", job_id=job_id or new_job_id("welcome"), to=to, name=name
        ),
        publish_email_job,
    )


def verify_link(
    to: To,
    url: Annotated[str, typer.Option("--url", help="the verification link (https)")],
    name: Annotated[str | None, typer.Option("--name")] = None,
    expires_in_hours: Annotated[int, typer.Option("--expires-in-hours")] = 24,
    job_id: JobId = None,
) -> None:
    """Publish a VERIFICATION_LINK job; prints the job_id."""
    _publish(
        lambda: VerificationLinkJob(
            type="VERIFICATION_LINK",
            job_id=job_id or new_job_id("verify"),
            to=to,
            name=name,
            verification_url=url,
            expires_in_hours=expires_in_hours,
        ),
        publish_email_job,
    )


def ad(
    user: Annotated[str, typer.Option("--user", help="the user's id")],
    product: Annotated[str, typer.Option("--product", help="product name")],
    description: Annotated[str, typer.Option("--description", help="product description")],
    url: Annotated[str | None, typer.Option("--url", help="product page (https)")] = None,
    audience: Annotated[str, typer.Option("--audience")] = "people who would enjoy this product",
    tone: Annotated[str, typer.Option("--tone")] = "friendly",
    language: Annotated[str, typer.Option("--language")] = "en",
    platform: Annotated[Platform, typer.Option("--platform")] = Platform.GOOGLE_SEARCH,
    variants: Annotated[int, typer.Option("--variants")] = 3,
    email: Annotated[
        str | None, typer.Option("--email", help="send an AD_READY email here when the copy is ready")
    ] = None,
    live: Annotated[
        bool, typer.Option("--live", help="push the result to the user's WebSocket page")
    ] = False,
    job_id: JobId = None,
) -> None:
    """Publish an ad-copy job; prints the job_id."""
    _publish(
        lambda: AdJob(
            job_id=job_id or new_job_id("ad"),
            user_id=user,
            product=Product(name=product, description=description, url=url),
            audience=audience,
            tone=tone,
            language=language,
            platform=platform,
            variants=variants,
            notify=Notify(email=email, live=live),
        ),
        publish_ad_job,
    )


def ws_token(
    user: Annotated[str, typer.Option("--user")],
    base_url: Annotated[str, typer.Option("--base-url")] = "http://127.0.0.1:8001",
) -> None:
    """Print a link to the live notifier's page for a user."""
    live = Context.load().settings.live
    if live.token_secret is None:
        raise SettingsError("invalid configuration: WS_TOKEN_SECRET is not set")
    line(token_url(user, base_url, secret=live.token_secret, ttl_s=live.token_ttl_s))


def _publish(build: Callable[[], T], publish: Callable[..., Coroutine[Any, Any, str]]) -> None:
    """Build the job (a validation error: exit 2), publish it, print its id."""
    try:
        job = build()
    except ValidationError as error:
        fail(f"invalid job: {describe_validation_error(error)}", 2)
    context = Context.load()
    try:
        published: str = asyncio.run(
            publish(
                job,
                bootstrap_servers=context.bootstrap,
                topic_prefix=context.settings.kafka.topic_prefix,
                client_options=context.kafka_options,
            )
        )
    except KafkaError as error:
        kafka_failed(error)
    line(published)
