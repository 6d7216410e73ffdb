"""Bearer-token auth for the status API and /metrics; a console sign-in for the console's reads."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from pydantic import SecretStr
from starlette.requests import Request

from tracker.context import context_of
from tracker.errors import Unauthorized

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Set in a request's scope by the console (tracker/console/web.py) once it has checked the
# browser's signed-in session; only the console's own routes run with it.
SIGNED_IN = "tracker.console.signed_in"


def require_api_token(request: Request) -> None:
    """Pass when the API is open (TRACKER_API_AUTH=off, or no tokens: loopback only, see
    `Settings.check_exposure`), the request carries one of TRACKER_API_TOKENS, or it is a read
    the console makes for a signed-in browser (its change stream); else 401.

    No HTTP Basic: a browser replays a cached Basic login on any request to this origin,
    a form posted from another site included. Browsers sign in to the console instead.
    """
    settings = context_of(request).settings
    if settings.api_open:
        return
    if request.method in SAFE_METHODS and request.scope.get(SIGNED_IN) is True:
        return
    if not _matches(presented_token(request), settings.api_tokens):
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


def presented_token(request: Request) -> str | None:
    """The bearer token of the Authorization header, if any."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials
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
