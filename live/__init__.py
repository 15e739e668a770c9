"""The live notifier: each user's ad results, pushed to their browser over a WebSocket.

A deployable of its own, next to the worker (whose email notifier is `streams.notifiers`).
Run it with `python -m live`; the app is built by `live.app.create_app` or, from the
environment, `live.app.app_from_env`.
"""

from live.hub import Hub, Subscription
from live.links import token_url
from live.tokens import InvalidToken, TokenClaims, issue_token, read_token, verify_token

__all__ = [
    "Hub",
    "InvalidToken",
    "Subscription",
    "TokenClaims",
    "issue_token",
    "read_token",
    "token_url",
    "verify_token",
]
