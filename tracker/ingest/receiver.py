"""`POST /callbacks/vod`: authenticate VOD's event notification, store it durably, answer fast.

The request path only checks, parses (`events.py`) and hands the event to the inbox (`inbox.py`),
which commits it in a group before this handler answers 200; applying it to a job happens off the
request path (`applier.py`). See vod-reference.md section 6 for the bodies, the signature and VOD's
retries.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tracker import metrics
from tracker.config import Settings
from tracker.context import context_of
from tracker.ingest.events import parse_callback
from tracker.ingest.inbox import StoreFailed
from tracker.ingest.refusals import refusal_row
from tracker.vod import sign_callback

log = logging.getLogger(__name__)

PATH = "/callbacks/vod"
MAX_BODY = 64 * 1024


class Rejected(Exception):
    """The request is refused; `status` and `code` shape the JSON answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def check_signature(settings: Settings, headers: Mapping[str, str], now: datetime) -> None:
    """Raise Rejected(401) unless the request is signed with one of the keys, recently enough.

    Any configured key is accepted, so a key can be rotated without losing events. Compared in
    constant time; the timestamp must be within `callback_max_skew` of our clock.
    """
    if settings.callback_open:
        return
    timestamp = headers.get("x-vod-timestamp")
    signature = headers.get("x-vod-signature")
    if not timestamp or not signature:
        raise Rejected(401, "missing_signature", "X-VOD-TIMESTAMP and X-VOD-SIGNATURE required")
    if settings.callback_url is None:
        raise Rejected(401, "not_configured", "TRACKER_CALLBACK_URL is not set")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise Rejected(401, "bad_timestamp", "X-VOD-TIMESTAMP is not Unix seconds")
    if abs(now.timestamp() - int(timestamp)) > settings.callback_max_skew.total_seconds():
        raise Rejected(401, "stale_timestamp", "X-VOD-TIMESTAMP is outside the allowed skew")
    given = signature.strip().lower().encode("latin-1", "replace")
    matched = False
    for expected in _signatures(settings.callback_url, int(timestamp), *settings.callback_auth_key):
        matched |= hmac.compare_digest(expected, given)
    if not matched:
        raise Rejected(401, "bad_signature", "X-VOD-SIGNATURE does not match")


@lru_cache(maxsize=64)
def _signatures(url: str, timestamp: int, *keys: SecretStr) -> tuple[bytes, ...]:
    """The valid signatures for a timestamp; VOD's callbacks of one second share them."""
    return tuple(sign_callback(url, timestamp, key.get_secret_value()).encode() for key in keys)


async def read_body(receive: Receive, length: str | None) -> bytes:
    """The raw body, refusing more than MAX_BODY whether or not Content-Length says so."""
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise Rejected(413, "payload_too_large", f"body over {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Rejected(400, "disconnected", "the client went away mid-body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise Rejected(413, "payload_too_large", f"body over {MAX_BODY} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


WANTED = frozenset(
    {b"content-length", b"content-type", b"user-agent", b"x-vod-signature", b"x-vod-timestamp"}
)
KEPT = ("x-vod-timestamp", "content-type", "user-agent")  # for inspection; never the signature


def wanted_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The headers this route reads, in one pass over the raw list (ASGI names are lower-case)."""
    return {name.decode(): value.decode("latin-1") for name, value in raw if name in WANTED}


def kept_headers(headers: dict[str, str], client: tuple[str, int] | None) -> dict[str, str]:
    """The few headers worth keeping for inspection, and the sender's address."""
    # Decoded as latin-1, any value is valid text; only NUL needs out for PostgreSQL.
    kept = {
        name: value[:256].replace("\x00", "")
        for name in KEPT
        if (value := headers.get(name)) is not None
    }
    if client is not None:
        kept["remote"] = client[0]
    return kept


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


STORED = _json({"status": "stored"})
DUPLICATE = _json({"status": "duplicate"})
UNAVAILABLE = _json({"error": "unavailable", "message": "could not store the event"})


async def receive_callback(app: Starlette, scope: Scope, receive: Receive) -> tuple[int, bytes]:
    """Authenticate, parse, store (committed), answer. Never a 500 for anything the sender does."""
    context = context_of(app)
    settings, inbox, now = context.settings, context.inbox, context.clock()
    headers = wanted_headers(scope["headers"])
    try:
        check_signature(settings, headers, now)
        raw = await read_body(receive, headers.get("content-length"))
    except Rejected as rejected:
        metrics.CALLBACKS_REJECTED.labels(rejected.code).inc()
        client = scope["client"][0] if scope.get("client") else "?"
        log.warning("callback from %s rejected: %s", client, rejected.code)
        await context.refusals.record(
            refusal_row(settings, scope, headers, *_fields(rejected), now), now
        )
        return rejected.status, _json({"error": rejected.code, "message": rejected.message})

    row, malformed = parse_callback(raw)
    row["received_at"] = now
    row["headers"] = kept_headers(headers, scope.get("client"))
    try:
        recorded = await inbox.record(row)
    except StoreFailed:
        if malformed is None:
            metrics.CALLBACKS_REJECTED.labels("unavailable").inc()  # the writer logs the cause
            return 503, UNAVAILABLE
    if malformed is not None:  # stored only for inspection
        metrics.CALLBACKS_REJECTED.labels("malformed").inc()
        return 400, _json({"error": "bad_request", "message": malformed})
    return 200, STORED if recorded.new else DUPLICATE


def _fields(rejected: Rejected) -> tuple[str, int, str]:
    return rejected.code, rejected.status, rejected.message


class CallbackReceiver:
    """Answers `POST /callbacks/vod` ahead of the middleware stack, as plain ASGI.

    This is the path VOD hammers (benchmarks/ingest.py): it skips routing, request and response
    objects and the generic request metrics, and counts itself the same way with label children
    bound once. Everything else, including other methods on this path, goes to the app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._seconds = metrics.REQUEST_SECONDS.labels(PATH)
        self._requests: dict[int, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        metrics.CALLBACKS_RECEIVED.inc()
        status, body = await receive_callback(scope["app"], scope, receive)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        if (counter := self._requests.get(status)) is None:
            counter = self._requests[status] = metrics.REQUESTS.labels(PATH, "POST", str(status))
        counter.inc()
        self._seconds.observe(time.perf_counter() - started)


async def _only_post(request: Request) -> Response:
    """Never reached for POST (CallbackReceiver answers it); routed so other methods get 405."""
    raise HTTPException(405)


routes = [Route(PATH, _only_post, methods=["POST"])]
