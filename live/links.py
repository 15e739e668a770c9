"""Links that open the live notifier's page for one user (the `ws-token` CLI command).

token_url("u-1", "http://127.0.0.1:8001", secret=secret, ttl_s=3600)
# -> "http://127.0.0.1:8001/?token=eyJzdWIiOiJ1LTEi..."
"""

from __future__ import annotations

import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr

from live.tokens import issue_token


def token_url(
    user_id: str,
    base_url: str,
    *,
    secret: SecretStr | str,
    ttl_s: int,
    now_s: float | None = None,
) -> str:
    """The page at `base_url` with a token for `user_id`, signed with `secret` and valid
    for `ttl_s` seconds from `now_s` (default: now). Any `token` already in the URL is replaced."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
    token = issue_token(user_id, secret, ttl_s, time.time() if now_s is None else now_s)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", token))
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode(query), ""))
