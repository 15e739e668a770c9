"""The WebSocket notifier: each user's ad results, pushed to their browser.

Run it with `python -m streams.ws`; the app is `streams.ws.app:create_app`.
"""

from streams.ws.hub import Hub, Subscription
from streams.ws.links import token_url
from streams.ws.tokens import InvalidToken, TokenClaims, issue_token, read_token, verify_token

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
