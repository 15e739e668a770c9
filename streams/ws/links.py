"""Links that open the notifier page for one user (the `ws-token` CLI command).

token_url("u-1", "http://127.0.0.1:8001")
# -> "http://127.0.0.1:8001/?token=eyJzdWIiOiJ1LTEi..."
"""

from __future__ import annotations

import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr

from streams.settings import Settings, SettingsError, get_settings
from streams.ws.tokens import issue_token


def require_secret(settings: Settings) -> SecretStr:
    """`WS_TOKEN_SECRET`, or a one-line start-up error when it is not set."""
    if settings.ws_token_secret is None or not settings.ws_token_secret.get_secret_value():
        raise SettingsError("WS_TOKEN_SECRET is not set")
    return settings.ws_token_secret


def token_url(
    user_id: str,
    base_url: str,
    *,
    secret: SecretStr | None = None,
    ttl_s: int | None = None,
    now_s: float | None = None,
) -> str:
    """The notifier page at `base_url` with a fresh token for `user_id`.

    `secret` and `ttl_s` default to `WS_TOKEN_SECRET` and `WS_TOKEN_TTL_S`.
    """
    if secret is None or ttl_s is None:
        settings = get_settings()
        secret = secret if secret is not None else require_secret(settings)
        ttl_s = ttl_s if ttl_s is not None else settings.ws_token_ttl_s
    token = issue_token(user_id, secret, ttl_s, time.time() if now_s is None else now_s)
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", token))
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode(query), ""))
