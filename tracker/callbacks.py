"""`POST /callbacks/vod`: authenticate VOD's event notification, store it durably, answer fast.

The request path only checks, parses and hands the event to the inbox (tracker/inbox.py), which
commits it in a group before this handler answers 200; applying it to a job happens off the
request path. See vod-reference.md section 6 for the bodies, the signature and VOD's retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tracker import metrics
from tracker.config import Settings
from tracker.inbox import Inbox, StoreFailed, is_clean, parse_event_time
from tracker.vod import sign_callback

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
# VOD gives up on a delivery after 5 s (vod-reference.md 6.5): answer 503 before that, so it
# retries, rather than letting it time out. A late commit is harmless: the retry is a duplicate.
STORE_TIMEOUT = 4.0
SEP = "\x1f"
# Completion events carry success or fail (vod-reference.md 6.2), in any case.
STATUSES = frozenset({"success", "fail"})


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
    for key in settings.callback_auth_key:
        expected = sign_callback(settings.callback_url, int(timestamp), key.get_secret_value())
        matched |= hmac.compare_digest(expected.encode(), given)
    if not matched:
        raise Rejected(401, "bad_signature", "X-VOD-SIGNATURE does not match")


async def read_body(request: Request, length: str | None) -> bytes:
    """The raw body, refusing more than MAX_BODY whether or not Content-Length says so."""
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise Rejected(413, "payload_too_large", f"body over {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise Rejected(413, "payload_too_large", f"body over {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _text(value: Any, limit: int) -> str | None:
    """A storable short string field, or None."""
    if isinstance(value, str) and 0 < len(value) <= limit and is_clean(value):
        return value
    return None


def _key(*parts: str) -> str:
    return hashlib.sha256(SEP.join(parts).encode()).hexdigest()


def parse_callback(raw: bytes) -> tuple[dict[str, Any], str | None]:
    """The inbox row for a body, and why it is malformed (None if it is not).

    Dedup key: for an AI completion event, JobId + EventType + Status + EventTime. They name
    the event itself, so VOD's repeated deliveries collapse whatever their JSON spacing or key
    order, while a contradicting event (a `fail` after a `success`) is kept as its own row for
    the record (the state machine ignores it). Any other body: a hash of the body normalised
    (sorted keys, compact), or of the raw bytes when it is not JSON.
    """
    row: dict[str, Any] = {
        "event_type": None,
        "job_id": None,
        "media_id": None,
        "status": None,
        "event_time": None,
        "applied": False,
        "reason": None,
    }
    try:
        text = raw.decode()
        body = json.loads(text)
    except (ValueError, RecursionError):
        return _malformed(row, raw, "body is not UTF-8 JSON")
    if not isinstance(body, dict):
        return _malformed(row, raw, "body is not a JSON object")
    # The body is kept as its text (escapes and all); only the fields taken into columns must be
    # storable text (`_text`), and the applier cleans what it copies into the job.
    row["body"] = text
    event_type = _text(body.get("EventType"), 64)
    if event_type is None:
        return _malformed(row, raw, "EventType missing or not a short string", text)
    row["event_type"] = event_type
    row["job_id"] = _text(body.get("JobId"), 128)
    row["media_id"] = _text(body.get("MediaId") or body.get("VideoId"), 128)
    status = _text(body.get("Status"), 32)
    row["status"] = status.lower() if status else None
    raw_time = body.get("EventTime")
    row["event_time"] = parse_event_time(raw_time)

    if not (event_type.startswith("AI") and event_type.endswith("Complete")):
        try:
            normal = json.dumps(body, sort_keys=True, separators=(",", ":"))
        except (ValueError, RecursionError):  # nesting json.loads took but dumps refuses
            normal = hashlib.sha256(raw).hexdigest()
        row["dedup_key"] = _key("event", normal)
        row["reason"] = "not_ai_event"
        return row, None
    if row["job_id"] is None:
        return _malformed(row, raw, "JobId missing or not a short string", text)
    if row["status"] not in STATUSES:
        return _malformed(row, raw, "Status must be success or fail", text)
    if body.get("MediaId") is not None and row["media_id"] is None:
        return _malformed(row, raw, "MediaId not a short string", text)
    when = row["event_time"].isoformat() if row["event_time"] else str(raw_time or "")
    row["dedup_key"] = _key("ai", event_type, row["job_id"], row["status"], when)
    row["applied"] = None  # for the applier
    return row, None


def _malformed(
    row: dict[str, Any], raw: bytes, reason: str, text: str | None = None
) -> tuple[dict[str, Any], str]:
    if text is None:  # keep undecodable bytes readable; PostgreSQL text cannot hold NUL
        text = raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
    row.update(
        dedup_key=_key("raw", hashlib.sha256(raw).hexdigest()),
        body=text,
        applied=False,
        reason=f"malformed: {reason}"[:255],
    )
    return row, reason


WANTED = (
    "content-length",
    "content-type",
    "user-agent",
    "x-vod-signature",
    "x-vod-timestamp",
)


def wanted_headers(request: Request) -> dict[str, str]:
    """The headers this route reads, in one pass over the raw list (ASGI names are lower-case)."""
    wanted = {name.encode() for name in WANTED}
    return {
        name.decode(): value.decode("latin-1")
        for name, value in request.scope["headers"]
        if name in wanted
    }


def kept_headers(headers: dict[str, str], request: Request) -> dict[str, str]:
    """The few headers worth keeping for inspection (never the signature)."""
    kept = {
        name: value[:256]
        for name in ("x-vod-timestamp", "content-type", "user-agent")
        if (value := headers.get(name)) is not None
    }
    if request.client is not None:
        kept["remote"] = request.client.host
    return {k: v.encode("utf-8", "replace").decode() for k, v in kept.items()}


def _json(status: int, payload: dict[str, Any]) -> Response:
    return Response(
        json.dumps(payload, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
    )


OK_NEW = _json(200, {"status": "stored"}).body
OK_DUPLICATE = _json(200, {"status": "duplicate"}).body


async def receive_callback(request: Request) -> Response:
    """Authenticate, parse, store (committed), answer. Never a 500 for anything the sender does."""
    metrics.CALLBACKS_RECEIVED.inc()
    settings: Settings = request.app.state.settings
    inbox: Inbox = request.app.state.inbox
    now = request.app.state.clock()
    headers = wanted_headers(request)
    try:
        check_signature(settings, headers, now)
        raw = await read_body(request, headers.get("content-length"))
    except Rejected as rejected:
        metrics.CALLBACKS_REJECTED.labels(rejected.code).inc()
        client = request.client.host if request.client else "?"
        log.warning("callback from %s rejected: %s", client, rejected.code)
        return _json(rejected.status, {"error": rejected.code, "message": rejected.message})

    row, malformed = parse_callback(raw)
    row["received_at"] = now
    row["headers"] = kept_headers(headers, request)
    try:
        async with asyncio.timeout(STORE_TIMEOUT):
            recorded = await inbox.record(row)
    except (StoreFailed, TimeoutError):
        if malformed is not None:  # storing it was only for inspection
            return _bad_request(malformed)
        metrics.CALLBACKS_REJECTED.labels("unavailable").inc()  # the writer logs the cause
        return _json(503, {"error": "unavailable", "message": "could not store the event"})
    if malformed is not None:
        return _bad_request(malformed)
    return Response(OK_NEW if recorded.new else OK_DUPLICATE, media_type="application/json")


def _bad_request(reason: str) -> Response:
    metrics.CALLBACKS_REJECTED.labels("malformed").inc()
    return _json(400, {"error": "bad_request", "message": reason})


routes = [Route("/callbacks/vod", receive_callback, methods=["POST"])]
