"""Where rendered emails go: Resend, or a local outbox of files.

Both adapters satisfy `EmailSender`; settings pick one. Resend errors are classified
here, where they are raised, into `TransientError` and `PermanentError`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Protocol, cast

import httpx
import resend
from pydantic import SecretStr
from resend.exceptions import ResendError
from resend.http_client_async import AsyncHTTPClient

from processors.email.render import RenderedEmail
from processors.errors import PermanentError, RateLimited, TransientError
from processors.observe import CallObserver, timed_call


@dataclass(frozen=True)
class OutgoingEmail:
    idempotency_key: str
    sender: str
    to: str
    content: RenderedEmail


class EmailSender(Protocol):
    name: str

    async def send(self, email: OutgoingEmail) -> str:
        """Send one email and return the provider's message id."""
        ...

    async def close(self) -> None: ...


BatchResult = list[str | PermanentError]
"""Per entry of a batch, in order: the provider's message id, or why it refused that entry."""


class BatchSender(EmailSender, Protocol):
    """A sender with a batch call, and a rate limit that its budget must respect."""

    max_batch: int

    async def send_batch(self, entries: Sequence[Mapping[str, Any]], *, idempotency_key: str) -> BatchResult:
        """Send the entries (`email_params`) in one call. Raises `RateLimited`,
        `TransientError` (the outcome is unknown) or `PermanentError` (none was sent)."""
        ...


def email_params(email: OutgoingEmail) -> dict[str, Any]:
    """The request body of one email, as sent alone or as a batch entry."""
    return {
        "from": email.sender,
        "to": [email.to],
        "subject": email.content.subject,
        "html": email.content.html,
        "text": email.content.text,
    }


class OutboxSender:
    """Writes each email as `<key>.eml` (MIME, text + HTML) and `<key>.html`.

    The file name is the idempotency key, so sending the same job twice leaves one email.
    """

    name = "outbox"

    def __init__(self, outbox_dir: Path) -> None:
        self._dir = outbox_dir

    async def send(self, email: OutgoingEmail) -> str:
        await asyncio.to_thread(self._write, email)
        return f"outbox:{email.idempotency_key}"

    def _write(self, email: OutgoingEmail) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        message = EmailMessage()
        message["From"] = email.sender
        message["To"] = email.to
        message["Subject"] = email.content.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(idstring=email.idempotency_key, domain="outbox.local")
        message.set_content(email.content.text)
        message.add_alternative(email.content.html, subtype="html")
        stem = _safe_file_stem(email.idempotency_key)
        # Write to a temporary name and rename, so a reader never sees half an email.
        for suffix, data in ((".html", email.content.html.encode()), (".eml", bytes(message))):
            tmp = self._dir / f".{stem}{suffix}.tmp"
            tmp.write_bytes(data)
            tmp.replace(self._dir / f"{stem}{suffix}")

    async def close(self) -> None:
        return None


def _safe_file_stem(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


DEFAULT_MAX_CONNECTIONS = 64
"""Connections to Resend open at once: at least as many as emails in flight."""

SHARD_CONNECTIONS = 16
"""Connections per httpx pool. httpcore matches each queued request against every
connection of its pool, so one large pool costs O(connections) per request: at 64 in
flight against a provider answering in 200 ms, one pool of 64 used a whole core and
reached 75 emails/s. Pools of 16 keep that cost small."""


class _PooledHttpxClient(AsyncHTTPClient):
    """The SDK's own httpx client opens a connection per request; this one keeps pools.

    `max_connections` (at least the number of emails in flight, or sends wait for a
    connection and the wait counts against the timeout) are split over pools of
    `SHARD_CONNECTIONS`, all kept alive; a request goes to the pool with the fewest
    requests in flight.
    """

    def __init__(self, timeout_s: float, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        shards = -(-max_connections // SHARD_CONNECTIONS)
        per_shard = -(-max_connections // shards)
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        self._clients = [
            httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), limits=limits) for _ in range(shards)
        ]
        self._in_flight = [0] * shards

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        json: dict[str, object] | list[object] | None = None,
        files: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        shard = min(range(len(self._clients)), key=self._in_flight.__getitem__)
        self._in_flight[shard] += 1
        try:
            response = await self._clients[shard].request(method, url, headers=headers, json=json)
        finally:
            self._in_flight[shard] -= 1
        return response.content, response.status_code, response.headers

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


class ResendSender:
    """Sends through Resend's async API with `Idempotency-Key` = the job id."""

    name = "resend"
    max_batch = 100
    """Resend's limit of emails per batch call."""

    def __init__(
        self,
        api_key: SecretStr,
        api_url: str,
        timeout_s: float,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        observer: CallObserver | None = None,
    ) -> None:
        """`max_connections`: at least the number of emails in flight, or sends wait for a
        connection (and the wait counts against `timeout_s`). `observer` is told how long
        each call took (`send`, `batch`)."""
        self._observer = observer
        # The SDK reads its configuration from module globals.
        resend.api_key = api_key.get_secret_value()
        resend.api_url = api_url.rstrip("/")
        self._http = _PooledHttpxClient(timeout_s, max_connections)
        resend.default_async_http_client = self._http

    async def send(self, email: OutgoingEmail) -> str:
        params = cast(resend.Emails.SendParams, email_params(email))
        options: resend.Emails.SendOptions = {"idempotency_key": email.idempotency_key}
        with timed_call(self._observer, "send"):
            try:
                response = await resend.Emails.send_async(params, options)
            except ResendError as error:
                raise classify_resend_error(error) from None
        return str(response["id"])

    async def send_batch(self, entries: Sequence[Mapping[str, Any]], *, idempotency_key: str) -> BatchResult:
        """`POST /emails/batch` in permissive mode: an entry the provider refuses comes back
        as a `PermanentError` in its place, and the others are sent."""
        if not 1 <= len(entries) <= self.max_batch:
            raise ValueError(f"a batch has 1 to {self.max_batch} entries, not {len(entries)}")
        params = cast(list[resend.Emails.SendParams], [dict(entry) for entry in entries])
        options: resend.Batch.SendOptions = {
            "idempotency_key": idempotency_key,
            "batch_validation": "permissive",
        }
        with timed_call(self._observer, "batch"):
            try:
                response = await resend.Batch.send_async(params, options)
            except ResendError as error:
                raise classify_resend_error(error) from None
        return batch_result(len(entries), response)

    async def close(self) -> None:
        await self._http.aclose()


def batch_result(size: int, response: Mapping[str, Any]) -> BatchResult:
    """Resend's permissive answer to `size` entries: `data` holds the ids of the entries
    sent, in order; `errors` the index and message of each refused one."""
    refused: dict[int, str] = {}
    for error in response.get("errors") or []:
        refused[int(error["index"])] = str(error.get("message") or "refused")
    ids = [str(item["id"]) for item in response.get("data") or []]
    if len(ids) + len(refused) != size:
        # Not Resend's contract: trust none of it, and let the batch be repeated as it is.
        raise TransientError(
            f"Resend's batch answer lists {len(ids)} ids and {len(refused)} errors for {size} emails",
            error_class="ResendBatchAnswer",
        )
    sent = iter(ids)
    result: BatchResult = []
    for index in range(size):
        if index in refused:
            reason = _ADDRESS.sub("<address>", refused[index])[:200]
            result.append(PermanentError(f"Resend refused it: {reason}", error_class="Resend422:batch"))
        else:
            result.append(next(sent))
    return result


_TRANSIENT_409 = {"concurrent_idempotent_requests"}
# A reason travels in headers and logs: no address in it.
_ADDRESS = re.compile(r"[^\s<>\"'`,;:]+@[^\s<>\"'`,;]+")


def classify_resend_error(error: ResendError) -> TransientError | PermanentError:
    """Map a Resend error to our classes. Keeps `Retry-After`; never keeps the body."""
    try:
        status = int(error.code)
    except (TypeError, ValueError):
        status = 500
    kind = str(error.error_type or "unknown")
    error_class = f"Resend{status}:{kind}"[:80]
    message = f"Resend answered {status} {kind}"
    if error.error_type == "HttpClientError":
        return TransientError(
            "Resend unreachable (network error or timeout)", error_class="ResendNetworkError"
        )
    if status == 429:
        return RateLimited(message, error_class=error_class, retry_after_ms=_retry_after_ms(error.headers))
    if status >= 500:
        return TransientError(message, error_class=error_class, retry_after_ms=_retry_after_ms(error.headers))
    if status == 409 and kind in _TRANSIENT_409:
        return TransientError(message, error_class=error_class, retry_after_ms=1_000)
    return PermanentError(message, error_class=error_class)


def _retry_after_ms(headers: Mapping[str, str] | None) -> int | None:
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    value = lowered.get("retry-after") or lowered.get("ratelimit-reset")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP-date: rare from Resend; let computed backoff decide
    return max(0, int(seconds * 1000))
