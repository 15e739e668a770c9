"""Signed, expiring tokens that let a browser subscribe to one user's results.

A token is `<payload>.<signature>`, both base64url without padding. The payload is
compact JSON `{"sub": user_id, "exp": epoch_seconds}`; the signature is
HMAC-SHA256 over the encoded payload, keyed with `WS_TOKEN_SECRET`.

    token = issue_token("u-1", secret, ttl_s=3600, now_s=time.time())
    verify_token(token, secret, now_s=time.time())  # -> "u-1", or raises InvalidToken
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

# Separates these signatures from any other HMAC a shared secret might be used for.
# Tokens issued before the notifier moved to `live/` carry it too: keep it as it is.
_PURPOSE = b"ws-token.v1."
MAX_TOKEN_CHARS = 2_048
MAX_USER_ID_CHARS = 256

Reason = Literal["expired", "bad signature", "malformed", "lifetime too long"]


class InvalidToken(ValueError):
    """The token is expired, not signed with our secret, or not a token at all."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(f"invalid token: {reason}")
        self.reason: Reason = reason


def issue_token(user_id: str, secret: SecretStr | str, ttl_s: int, now_s: float) -> str:
    """A token for `user_id`, valid for `ttl_s` seconds from `now_s` (epoch seconds)."""
    if not user_id or len(user_id) > MAX_USER_ID_CHARS:
        raise ValueError(f"user_id must be 1 to {MAX_USER_ID_CHARS} characters")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    claims = {"sub": user_id, "exp": int(now_s) + ttl_s}
    payload = _encode(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
    return f"{payload}.{_sign(payload, secret)}"


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    expires_s: int


def verify_token(token: str, secret: SecretStr | str, now_s: float) -> str:
    """The user id the token was issued for. Raises `InvalidToken` when it is expired
    (at or after its expiry), its signature does not match, or it is malformed."""
    return read_token(token, secret, now_s).user_id


def read_token(
    token: str, secret: SecretStr | str, now_s: float, *, max_ttl_s: float | None = None
) -> TokenClaims:
    """Like `verify_token`, with the expiry. With `max_ttl_s`, a token that expires
    more than `max_ttl_s` after `now_s` is refused too (it was issued with a longer
    TTL than this service allows)."""
    if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise InvalidToken("malformed")
    payload, signature = token.split(".")
    if not payload or not signature:
        raise InvalidToken("malformed")
    # Check the signature before reading the payload: nothing unauthenticated is parsed.
    if not hmac.compare_digest(signature.encode(), _sign(payload, secret).encode()):
        raise InvalidToken("bad signature")
    try:
        claims = json.loads(_decode(payload))
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken("malformed") from None
    if not isinstance(claims, dict):
        raise InvalidToken("malformed")
    user_id, expires_s = claims.get("sub"), claims.get("exp")
    if not isinstance(user_id, str) or not user_id or type(expires_s) is not int:
        raise InvalidToken("malformed")
    if now_s >= expires_s:
        raise InvalidToken("expired")
    if max_ttl_s is not None and expires_s - now_s > max_ttl_s:
        raise InvalidToken("lifetime too long")
    return TokenClaims(user_id=user_id, expires_s=expires_s)


def _sign(payload: str, secret: SecretStr | str) -> str:
    key = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if not key:
        raise ValueError("the token secret is empty")
    digest = hmac.new(key.encode(), _PURPOSE + payload.encode(), hashlib.sha256).digest()
    return _encode(digest)


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    try:
        # validate=True: reject characters outside the alphabet instead of skipping them.
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except binascii.Error:
        raise ValueError("not base64url") from None
