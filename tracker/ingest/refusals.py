"""Refused callbacks, recorded for the console's inbox page: why, and what the signature was
computed over, never a secret. This is where an operator setting up VOD sees why callbacks do
not arrive (a key or URL that differs from VOD's, a clock off, a proxy that changes the URL).

A flow: each refusal is one short transaction of its own, after the refusal was decided and
before it is answered. Bounded three ways: at most RATE rows a second per process (a flood is
sampled: the next row carries how many went unrecorded), at most KEPT rows, none older than
KEEP_FOR. Recording never changes the answer: a database that fails is logged and skipped.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from starlette.types import Scope

from tracker.config import Settings
from tracker.db import Database
from tracker.errors import describe
from tracker.models import CallbackRefusal
from tracker.vod import sign_callback

log = logging.getLogger(__name__)

KEPT = 1000
KEEP_FOR = timedelta(hours=24)
RATE = 10.0  # rows a second, refilled continuously
BURST = 50.0
WRITE_SECONDS = 2.0  # a refusal is answered after at most this much recording
WRONG_URL = "wrong_url"


class RefusalLog:
    """The refusals of one process; `record` never raises."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._tokens = BURST
        self._refilled = time.monotonic()
        self._unrecorded = 0

    def _take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(BURST, self._tokens + (now - self._refilled) * RATE)
        self._refilled = now
        if self._tokens < 1:
            self._unrecorded += 1
            return False
        self._tokens -= 1
        return True

    async def record(self, row: dict[str, Any], now: datetime) -> None:
        if not self._take():
            return
        row = {**row, "received_at": now, "count": 1 + self._unrecorded}
        self._unrecorded = 0
        try:
            async with asyncio.timeout(WRITE_SECONDS), self.database.write() as session:
                session.add(CallbackRefusal(**row))
                await session.flush()
                # Bounded whatever the rate: the oldest beyond KEPT and any older than a day.
                kept = (
                    select(CallbackRefusal.id)
                    .order_by(CallbackRefusal.id.desc())
                    .offset(KEPT - 1)
                    .limit(1)
                    .scalar_subquery()
                )
                await session.execute(
                    delete(CallbackRefusal).where(
                        (CallbackRefusal.id < kept) | (CallbackRefusal.received_at < now - KEEP_FOR)
                    )
                )
        except Exception as exc:
            log.warning("could not record a refused callback: %s", describe(exc))


def refusal_row(
    settings: Settings,
    scope: Scope,
    headers: dict[str, str],
    code: str,
    status: int,
    message: str,
    now: datetime,
) -> dict[str, Any]:
    """The row of a refusal: its reason (a bad signature that VOD computed over another URL
    is `wrong_url`, with that URL), and what the signature covers, naming the key, not its
    value."""
    timestamp = headers.get("x-vod-timestamp")
    signature = headers.get("x-vod-signature")
    seen = _url_seen(scope)
    detail: dict[str, Any] = {
        "url_seen": seen,
        "callback_url": settings.callback_url,
        "keys": len(settings.callback_auth_key),
        "x_vod_timestamp": _clip(timestamp),
        "x_vod_signature": _clip(signature),
        "content_length": _clip(headers.get("content-length")),
        "user_agent": _clip(headers.get("user-agent")),
    }
    if timestamp and timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12:
        detail["skew_s"] = round(now.timestamp() - int(timestamp), 1)
    signed_over = None
    if settings.callback_url and timestamp:
        signed_over = f"{settings.callback_url}|{_clip(timestamp)}|<AuthKey>"
    if code == "bad_signature" and signature and timestamp and timestamp.isdigit():
        signed_by_vod = _signed_url(settings, seen, int(timestamp), signature)
        if signed_by_vod is not None:
            code = WRONG_URL
            message = (
                f"VOD signed the URL {signed_by_vod}, but TRACKER_CALLBACK_URL is "
                f"{settings.callback_url}: make them the same (tracker vod callback set)"
            )
            detail["url_signed_by_vod"] = signed_by_vod
    client = scope.get("client")
    return {
        "reason": code,
        "status": status,
        "message": message[:1000],
        "remote": client[0][:64] if client else None,
        "signed_over": signed_over,
        "detail": detail,
    }


def _clip(value: str | None, limit: int = 200) -> str | None:
    return None if value is None else value[:limit].replace("\x00", "")


def _url_seen(scope: Scope) -> str:
    host = ""
    for name, value in scope.get("headers", []):
        if name == b"host":
            host = value.decode("latin-1")[:200]
    query = scope.get("query_string", b"").decode("latin-1")[:200]
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('path', '')}" + (
        f"?{query}" if query else ""
    )


def _signed_url(settings: Settings, seen: str, timestamp: int, signature: str) -> str | None:
    """The URL VOD's signature was computed over, among the likely forms of the one this
    request came to (scheme, trailing slash, query: what a proxy or a typo changes)."""
    base, _, query = seen.partition("?")
    rest = base.split("://", 1)[-1]
    forms = {f"{scheme}://{rest}" for scheme in ("http", "https")}
    forms |= {form.rstrip("/") for form in forms} | {form.rstrip("/") + "/" for form in forms}
    if query:
        forms |= {f"{form}?{query}" for form in forms}
    forms.discard(settings.callback_url or "")
    given = signature.strip().lower().encode("latin-1", "replace")
    for form in sorted(forms):
        for key in settings.callback_auth_key:
            expected = sign_callback(form, timestamp, key.get_secret_value()).encode()
            if hmac.compare_digest(expected, given):
                return form
    return None
