"""How the console answers: templates (Jinja2, autoescaped), their filters, the sign-in guard,
the security headers and HTML errors. Every page goes through `page`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from tracker.api.routes import UNREACHABLE, read_session
from tracker.clock import iso
from tracker.console import charts
from tracker.console.format import (
    ago,
    human_duration,
    ident_html,
    job_rows_html,
    parse_iso,
    pretty_json,
    state_html,
    time_html,
    utc_text,
)
from tracker.console.sessions import (
    CSRF_FIELD,
    SIGNED_IN,
    csrf_matches,
    csrf_token,
    session_is_valid,
)
from tracker.context import context_of
from tracker.errors import Forbidden, PayloadTooLarge, TrackerError

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATES = (
    "submitting",
    "submit_unknown",
    "processing",
    "succeeded",
    "failed",
    "submit_failed",
    "lost",
)

# Pages run our one script and stylesheet, nothing inline, nothing from elsewhere; they post
# forms only here and are framed by nobody (clickjacking). No page is cached: it shows job data
# and a signed-out browser's Back button must not bring it back.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, .svg included: ids and messages come from outside
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        duration=human_duration,
        utc=utc_text,
        iso=iso,
        pretty_json=pretty_json,
        q=lambda value: quote(str(value), safe=""),
        parse_iso=parse_iso,
    )
    env.globals.update(STATES=STATES, urlencode=urlencode, chart_svg=charts.svg)
    return env


templates = Jinja2Templates(env=_environment())


def render(request: Request, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    context = context_of(request)
    now = context.clock()
    values.setdefault("stream", None)
    values.setdefault("after", 0)
    response = templates.TemplateResponse(
        request,
        name,
        {
            "now": now,
            "ago": lambda moment: ago(moment, now),
            "time": lambda moment: time_html(moment, now),
            "ident": ident_html,
            "state": state_html,
            "job_rows": lambda jobs, link: job_rows_html(jobs, link, now),
            # Read, never made here: a page answering another site's link must not set a cookie
            # (it would replace the browser's session, which that request did not carry).
            "csrf": request.session.get("csrf", ""),
            "flash": request.session.pop("flash", None),
            "signed_in": request.scope.get(SIGNED_IN, False),
            "open_api": context.settings.api_open,
            **values,
        },
        status_code=status_code,
        headers=SECURITY_HEADERS,
    )
    return response


def flash(request: Request, message: str, kind: str = "ok") -> None:
    """A one-line note shown on the next page (kept in the signed cookie: never a secret)."""
    request.session["flash"] = {"message": message[:500], "kind": kind}


class SignInRequired(Exception):
    pass


async def check_signed_in(request: Request) -> bool:
    """Whether this browser may see the console: the API is open (loopback without tokens),
    or its session is valid. Remembered in the scope for the routes it calls (the stream)."""
    context = context_of(request)
    if context.settings.api_open:
        request.scope[SIGNED_IN] = True
        csrf_token(request)  # no sign-in to make one: the first page does
        return True
    session_id = request.session.get("sid")
    if not isinstance(session_id, str):
        return False
    async with reading(request) as session:
        valid = await session_is_valid(session, context.settings, session_id, context.clock())
    if not valid:
        request.session.pop("sid", None)
        return False
    request.scope[SIGNED_IN] = True
    return True


Handler = Callable[[Request], Awaitable[Response]]
PAGE_SESSION = "tracker.console.session"


@asynccontextmanager
async def reading(request: Request) -> AsyncIterator[AsyncSession]:
    """The read session of this GET page, opened once by `page`; else a new one."""
    shared = request.scope.get(PAGE_SESSION)
    if isinstance(shared, AsyncSession):
        yield shared
        return
    async with read_session(request) as session:
        yield session


def page(handler: Handler) -> Handler:
    """A console page: signed in or sent to the sign-in page (nothing of a job shown before),
    a tracker error shown as a page with its status, an unreachable database as a 503 page.
    A GET page reads in one session, the sign-in check included (`reading`)."""

    async def run(request: Request) -> Response:
        if not await check_signed_in(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/ui/login?" + urlencode({"next": target}), status_code=303)
        return await handler(request)

    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        try:
            if request.method != "GET":  # a change: its own units of work, fresh reads after
                return await run(request)
            async with read_session(request) as session:
                request.scope[PAGE_SESSION] = session
                try:
                    return await run(request)
                finally:
                    request.scope.pop(PAGE_SESSION, None)
        except TrackerError as exc:
            return error_page(request, exc.status_code, exc.message)
        except UNREACHABLE as exc:
            log.warning("console: database unreachable: %r", exc)
            return error_page(request, 503, "the database cannot be reached; retry shortly")

    return guarded


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    titles = {400: "Bad request", 403: "Refused", 404: "Not found", 503: "Unavailable"}
    return render(
        request,
        "error.html",
        status_code=status,
        title=titles.get(status, f"Error {status}"),
        message=message,
    )


FORM_LIMIT = 16 * 1024  # bytes of a console form: a token and a few fields


async def checked_form(request: Request) -> FormData:
    """The posted form, once its CSRF token matches this browser's session; else 403."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit() or int(length) > FORM_LIMIT:
        raise PayloadTooLarge(f"a console form is at most {FORM_LIMIT} bytes, with its length")
    form = await request.form(max_files=0, max_fields=20)
    if not csrf_matches(request, form.get(CSRF_FIELD)):
        raise Forbidden(
            "this form is not from this console's page, or the page is older than your "
            "sign-in (CSRF token); reload the page and try again"
        )
    return form
