"""The operator console under `/ui/`: sign-in, overview, jobs, a page per job and media,
subscriptions and their buttons, the callback inbox, the scheduler; live over the change stream.

A composition root (like `tracker.api`): server-rendered pages (templates/, Jinja2 autoescaped)
that read through the JSON API's query functions and the wings' statements, one stylesheet and
one small script of ours (static/), and `routes(settings)` for the app.
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tracker.api.notify import get_changes_stream
from tracker.config import Settings
from tracker.console import inbox, jobs, overview, subscriptions
from tracker.console.sessions import (
    COOKIE,
    csrf_token,
    local_path,
    secret_key,
    sign_in,
    sign_out,
    token_is_valid,
)
from tracker.console.web import (
    FORM_LIMIT,
    HERE,
    check_signed_in,
    checked_form,
    error_page,
    page,
    render,
)
from tracker.context import context_of
from tracker.errors import NotFound, TrackerError


async def login(request: Request) -> Response:
    """The sign-in form: one password field, `token`, an API token; a good one opens a session."""
    context = context_of(request)
    target = local_path(request.query_params.get("next"))
    try:
        if context.settings.api_open:
            return RedirectResponse(target, status_code=303)
        if request.method == "GET":
            if await check_signed_in(request):
                return RedirectResponse(target, status_code=303)
            if _from_another_site(request):
                # A link from another site (chat, a ticket) brings no SameSite=Strict cookie:
                # one hop from this page, which is same-site, brings it if there is one.
                again = "/ui/login?" + urlencode({"next": target, "hop": "1"})
                return render(request, "hop.html", again=again)
            csrf_token(request)
            return render(request, "login.html", target=target, error=None, signed_out=False)
        form = await checked_form(request)
        target = local_path(str(form.get("next") or ""))
        token = form.get("token")
        if not isinstance(token, str) or not token or not token_is_valid(context.settings, token):
            return render(
                request,
                "login.html",
                status_code=401,
                target=target,
                error="That is not one of this tracker's API tokens (TRACKER_API_TOKENS).",
                signed_out=False,
            )
        session_id = await sign_in(context.database, context.settings, token, context.clock())
    except TrackerError as exc:
        return error_page(request, exc.status_code, exc.message)
    request.session.clear()  # a fresh cookie and CSRF token: nothing carries over a sign-in
    request.session["sid"] = session_id
    csrf_token(request)
    return RedirectResponse(target, status_code=303)


def _from_another_site(request: Request) -> bool:
    came = request.headers.get("sec-fetch-site") == "cross-site"
    return came and request.query_params.get("hop") != "1"


@page
async def logout(request: Request) -> Response:
    """GET: a page with the sign-out button (a GET never changes anything); POST: sign out."""
    if request.method == "GET":
        return render(request, "logout.html")
    await checked_form(request)
    session_id = request.session.get("sid")
    if isinstance(session_id, str):
        await sign_out(context_of(request).database, session_id)
    request.session.clear()
    csrf_token(request)  # the sign-in form needs one
    return RedirectResponse("/ui/login?" + urlencode({"signed_out": "1"}), status_code=303)


async def changes(request: Request) -> Response:
    """The change stream (`GET /changes/stream`, SSE with Last-Event-ID) for a signed-in
    browser: an EventSource sends no Authorization header, so the cookie stands for it."""
    if not await check_signed_in(request):
        return JSONResponse(
            {"error": "unauthorized", "message": "sign in at /ui/login"}, status_code=401
        )
    return await get_changes_stream(request)


@page
async def not_found(request: Request) -> Response:
    raise NotFound(f"no page {request.url.path!r}")


async def root(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=307)


def routes(settings: Settings) -> list[BaseRoute]:
    """`/` (to the console) and the console under `/ui`, with its session cookie."""
    session = Middleware(
        SessionMiddleware,
        secret_key=secret_key(settings),
        session_cookie=COOKIE,
        max_age=int(settings.ui_session_ttl.total_seconds()),
        path="/ui",
        same_site="strict",
        https_only=not settings.on_loopback,
    )
    console = [
        Route("/", overview.overview, methods=["GET"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["GET", "POST"]),
        Route("/changes", changes, methods=["GET"]),
        Route("/jobs", jobs.job_list, methods=["GET"]),
        Route("/jobs/{job_id:path}", jobs.job_page, methods=["GET"]),
        Route("/rows/{row_id:int}", jobs.row_page, methods=["GET"]),
        Route("/media/{media_id:path}", jobs.media_page, methods=["GET"]),
        Route("/subscriptions", subscriptions.subscriptions_page, methods=["GET"]),
        Route("/subscriptions/{sub_id}", subscriptions.subscription_page, methods=["GET"]),
        Route("/subscriptions/{sub_id}/enable", subscriptions.set_enabled, methods=["POST"]),
        Route("/subscriptions/{sub_id}/disable", subscriptions.set_enabled, methods=["POST"]),
        Route("/subscriptions/{sub_id}/test", subscriptions.send_test, methods=["POST"]),
        Route("/subscriptions/{sub_id}/rotate", subscriptions.rotate, methods=["POST"]),
        Route("/subscriptions/{sub_id}/replay", subscriptions.replay, methods=["GET", "POST"]),
        Route("/deliveries/{delivery_id}/retry", subscriptions.retry, methods=["POST"]),
        Route("/inbox", inbox.inbox, methods=["GET"]),
        Route("/scheduler", inbox.scheduler, methods=["GET"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        Route("/{rest:path}", not_found),
    ]
    return [
        Route("/", root, methods=["GET"]),
        Mount("/ui", routes=console, middleware=[session], max_body_size=FORM_LIMIT),
    ]
