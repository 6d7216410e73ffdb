"""Guards in front of every route: no change of state from another site's page (CSRF)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from tracker.api.auth import SAFE_METHODS

# What a browser says about where a request comes from (Fetch Metadata): only these may change
# anything. Programs (VOD's callbacks, curl, the SDKs) send neither header and pass.
ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})


def cross_origin(headers: dict[bytes, bytes]) -> str | None:
    """Why a state-changing request comes from a page of another origin, or None.

    `Origin` must name this very origin (scheme aside: a TLS proxy may sit in front) when a
    browser sends it, which it does on every cross-origin POST; `null` (sandboxed frames,
    file: pages, redirects) never qualifies.
    """
    site = headers.get(b"sec-fetch-site")
    if site is not None and site.decode("latin-1").lower() not in ALLOWED_FETCH_SITES:
        return f"Sec-Fetch-Site is {site.decode('latin-1')!r}"
    origin = headers.get(b"origin")
    if origin is None:
        return None
    text = origin.decode("latin-1").strip()
    host = headers.get(b"host", b"").decode("latin-1").strip().lower()
    try:
        netloc = urlsplit(text).netloc.lower()
    except ValueError:
        netloc = ""
    if not netloc or netloc != host:
        return f"Origin {text!r} is not this service ({host or 'no Host'})"
    return None


class SameOriginWrites:
    """Refuses (403) any request other than GET, HEAD or OPTIONS sent by another site's page.

    With JSON-only bodies (tracker/api/bodies.py) and Bearer-only writes (tracker/api/auth.py)
    this is the third lock against cross-site request forgery: it also covers routes that read
    their body themselves, and a browser on the open loopback API, which has no token at all.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        reason = cross_origin(dict(scope["headers"]))
        if reason is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {"error": "cross_origin", "message": f"refused: {reason}; no change was made"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
