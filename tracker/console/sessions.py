"""Signing in to the console: a server-side session per browser, a CSRF token per session.

The cookie (Starlette's SessionMiddleware: itsdangerous-signed, HttpOnly, SameSite=Strict,
Secure unless on loopback) holds a random session id and the CSRF token, never the API token:
its content is signed, not hidden. The session itself is a row keyed by the id's hash, so signing
out deletes it on the server whatever copy of the cookie survives, and it ends on its own at
`expires_at` (TRACKER_UI_SESSION_TTL) or when the API token it was opened with is withdrawn
(the row holds an HMAC of that token, compared with the configured ones on every request).

Statements take a session and never commit; `sign_in` and `sign_out` are flows.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from tracker.api.auth import SIGNED_IN
from tracker.config import Settings
from tracker.db import Database
from tracker.models import ConsoleSession

COOKIE = "tracker_console"
CSRF_FIELD = "csrf_token"
__all__ = ["SIGNED_IN"]


def secret_key(settings: Settings) -> str:
    """The key that signs the cookie: TRACKER_UI_SECRET, else one derived from the API tokens
    (replicas agree without another setting; changing the tokens ends every cookie), else, on
    an open API (loopback, no tokens: no sign-in at all), one for this process."""
    if settings.ui_secret is not None:
        return settings.ui_secret.get_secret_value()
    if settings.api_tokens:
        joined = "\x1f".join(sorted(t.get_secret_value() for t in settings.api_tokens))
        return hashlib.sha256(f"tracker-console\x1f{joined}".encode()).hexdigest()
    return secrets.token_hex(32)


def token_digest(token: str) -> str:
    """What the session row keeps of its token: enough to tell whether that token is still
    configured, nothing a browser ever sees (the tokens are long and random: no dictionary)."""
    return hashlib.sha256(f"tracker-console-token\x1f{token}".encode()).hexdigest()


def _session_key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def token_is_valid(settings: Settings, token: str) -> bool:
    """One of TRACKER_API_TOKENS, compared in constant time with each (no early exit)."""
    presented = token.encode()
    found = False
    for candidate in settings.api_tokens:
        found |= hmac.compare_digest(presented, candidate.get_secret_value().encode())
    return found


async def sign_in(database: Database, settings: Settings, token: str, now: datetime) -> str:
    """A new session for a valid token (the caller checked it); returns the cookie's id.
    Expired sessions are deleted on the way (the table stays the size of the signed-in)."""
    session_id = secrets.token_urlsafe(32)
    async with database.write() as session:
        await session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
        session.add(
            ConsoleSession(
                id=_session_key(session_id),
                token_digest=token_digest(token),
                created_at=now,
                expires_at=now + settings.ui_session_ttl,
            )
        )
    return session_id


async def sign_out(database: Database, session_id: str) -> None:
    async with database.write() as session:
        await session.execute(
            delete(ConsoleSession).where(ConsoleSession.id == _session_key(session_id))
        )


async def sign_out_everyone(database: Database) -> int:
    async with database.write() as session:
        result = await session.execute(delete(ConsoleSession))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def session_is_valid(
    session: AsyncSession, settings: Settings, session_id: str, now: datetime
) -> bool:
    """The row exists, has not expired, and its token is still one of the configured ones."""
    row = await session.get(ConsoleSession, _session_key(session_id))
    if row is None or row.expires_at <= now:
        return False
    digests = [token_digest(t.get_secret_value()) for t in settings.api_tokens]
    valid = False
    for digest in digests:
        valid |= hmac.compare_digest(digest, row.token_digest)
    return valid


def csrf_token(request: Request) -> str:
    """This browser's CSRF token (a synchronizer token kept in its signed session); made on
    first use, so the sign-in form has one too (login CSRF)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_matches(request: Request, presented: object) -> bool:
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not isinstance(presented, str) or not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


def local_path(target: str | None, default: str = "/ui/") -> str:
    """Where to go after signing in: a path of the console, never another site."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui/") or "\\" in target:
        return default
    return target
