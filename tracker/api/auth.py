"""Bearer-token auth for the status API, the dashboard and /metrics."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable

from pydantic import SecretStr
from starlette.requests import Request

from tracker.context import context_of
from tracker.errors import Unauthorized

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def require_api_token(request: Request) -> None:
    """Pass when the API is open (TRACKER_API_AUTH=off, or no tokens: loopback only, see
    `Settings.check_exposure`) or the request carries one of TRACKER_API_TOKENS; else 401.
    """
    settings = context_of(request).settings
    if settings.api_open:
        return
    # A browser replays a cached Basic login on any request to this origin, including a form
    # posted from another site; only reads may ride on it (the dashboard), never a change.
    basic = request.method in SAFE_METHODS
    if not _matches(presented_token(request, basic=basic), settings.api_tokens):
        raise Unauthorized("a valid `Authorization: Bearer <token>` header is required")


def require_metrics_token(request: Request) -> None:
    """/metrics is open while the service listens on loopback, or when the API is open and no
    TRACKER_METRICS_TOKEN is set; otherwise it takes TRACKER_METRICS_TOKEN or any API token.
    """
    settings = context_of(request).settings
    if settings.on_loopback or (settings.api_open and settings.metrics_token is None):
        return
    accepted = [*settings.api_tokens] if settings.api_auth == "on" else []
    if settings.metrics_token is not None:
        accepted.append(settings.metrics_token)
    if not _matches(presented_token(request), accepted):
        raise Unauthorized("a valid `Authorization: Bearer <token>` header is required")


def presented_token(request: Request, *, basic: bool = True) -> str | None:
    """The bearer token, or the password of HTTP Basic (so a browser can open the dashboard)
    when `basic`."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials
    if basic and scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def _matches(token: str | None, accepted: Iterable[SecretStr]) -> bool:
    """Constant time per candidate, and every candidate is compared (no early exit)."""
    if token is None:
        return False
    presented = token.encode()
    found = False
    for candidate in accepted:
        found |= hmac.compare_digest(presented, candidate.get_secret_value().encode())
    return found
