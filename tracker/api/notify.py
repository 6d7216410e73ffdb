"""HTTP: the notification routes (subscriptions and their deliveries, the change feed and its live
stream). Thin: parse, call one `tracker.notify` function, shape the response
(tracker/api/schemas/). The API tokens guard them like the status API."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tracker.api import schemas
from tracker.api.auth import require_api_token
from tracker.api.routes import UNREACHABLE, caller_of, parse_time, read_session
from tracker.api.subscriptions import MAX_PAGE as MAX_DELIVERIES
from tracker.api.subscriptions import PAGE as DELIVERIES_PAGE
from tracker.api.subscriptions import list_deliveries, subscription_json
from tracker.context import context_of
from tracker.errors import BadRequest, NotFound, TrackerError, Unavailable
from tracker.notify.changes import (
    DEFAULT_PAGE,
    MAX_PAGE,
    ChangeFilter,
    change_json,
    is_pruned,
    latest_seq,
    list_changes,
)
from tracker.notify.deliveries import replay_failed, retry_delivery
from tracker.notify.egress import check_url
from tracker.notify.stream import waiters_of
from tracker.notify.subscriptions import (
    SubscriptionInput,
    create_subscription,
    delete_subscription,
    get_subscription,
    list_subscriptions,
    parse_input,
    rotate_secret,
    update_subscription,
)
from tracker.shapes import CHANGE_TYPES

STREAM_LIFE = 300.0  # seconds a stream stays open; the client reconnects with Last-Event-ID
HEARTBEAT = 15.0  # seconds between comments on an idle stream
STREAM_POLL = 0.5  # seconds between looks at the log (another replica's changes included)
ID_DIGITS = 18  # ids, seqs and cursors: a BIGINT has 19 digits, and 18 never overflow it


class ChangesGone(TrackerError):
    status_code = 410
    code = "changes_gone"


@asynccontextmanager
async def writing(request: Request) -> AsyncIterator[AsyncSession]:
    """A write unit of work; an unreachable database is a 503, never a 500."""
    try:
        async with context_of(request).database.write() as session:
            yield session
    except UNREACHABLE as exc:
        raise Unavailable(f"database unavailable ({type(exc).__name__}); retry later") from None


async def _body(request: Request) -> Mapping[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


async def _checked(request: Request, data: SubscriptionInput) -> SubscriptionInput:
    if data.url is None:
        return data
    allow = context_of(request).settings.notifies_private
    url = await check_url(data.url, allow_private=allow)
    return SubscriptionInput(url, data.event_types, data.all_types, data.description, data.enabled)


def _path_id(request: Request, name: str) -> int:
    raw = request.path_params[name]
    if not raw.isascii() or not raw.isdigit() or len(raw) > ID_DIGITS:
        raise NotFound(f"no such id {raw!r}", parameter=name)
    return int(raw)


def _sub_id(request: Request) -> int:
    return _path_id(request, "sub_id")


async def post_subscriptions(request: Request) -> JSONResponse:
    require_api_token(request)
    data = await _checked(request, parse_input(await _body(request), partial=False))
    async with writing(request) as session:
        context = context_of(request)
        limit = context.settings.notify_max_subscriptions
        sub = await create_subscription(session, data, context.clock(), limit=limit)
        body = subscription_json(sub, with_secret=True)
    return JSONResponse(body, status_code=201)


async def subscriptions(request: Request) -> JSONResponse:
    if request.method == "POST":
        return await post_subscriptions(request)
    require_api_token(request)
    async with read_session(request) as session:
        subs = await list_subscriptions(session)
        body: schemas.SubscriptionList = {"items": [subscription_json(sub) for sub in subs]}
        return JSONResponse(body)


async def subscription(request: Request) -> Response:
    require_api_token(request)
    sub_id = _sub_id(request)
    if request.method == "GET":
        async with read_session(request) as session:
            return JSONResponse(subscription_json(await get_subscription(session, sub_id)))
    if request.method == "DELETE":
        async with writing(request) as session:
            await delete_subscription(session, sub_id)
        return Response(status_code=204)
    data = await _checked(request, parse_input(await _body(request), partial=True))
    async with writing(request) as session:
        sub = await update_subscription(session, sub_id, data, context_of(request).clock())
        return JSONResponse(subscription_json(sub))


async def post_rotate_secret(request: Request) -> JSONResponse:
    require_api_token(request)
    async with writing(request) as session:
        sub = await rotate_secret(session, _sub_id(request), context_of(request).clock())
        return JSONResponse(subscription_json(sub, with_secret=True))


def _int_param(request: Request, name: str, low: int, high: int | None = None) -> int | None:
    values = request.query_params.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"{name}: given more than once", parameter=name)
    raw = values[0]
    if not raw.isascii() or not raw.isdigit() or len(raw) > ID_DIGITS:
        raise BadRequest(f"{name}: not a non-negative integer", parameter=name)
    value = int(raw)
    if value < low or (high is not None and value > high):
        bound = f" and {high}" if high is not None else ""
        raise BadRequest(f"{name}: must be at least {low}{bound}", parameter=name)
    return value


def _only(request: Request, known: set[str]) -> None:
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown parameter", parameter=unknown[0])


async def get_deliveries(request: Request) -> JSONResponse:
    require_api_token(request)
    _only(request, {"limit", "cursor"})
    limit = _int_param(request, "limit", 1, MAX_DELIVERIES) or DELIVERIES_PAGE
    cursor = _int_param(request, "cursor", 0)
    async with read_session(request) as session:
        await get_subscription(session, _sub_id(request))
        items, next_cursor = await list_deliveries(
            session, _sub_id(request), limit=limit, before=cursor
        )
    body: schemas.DeliveryPage = {
        "items": items,
        "next_cursor": None if next_cursor is None else str(next_cursor),
    }
    return JSONResponse(body)


async def post_replay(request: Request) -> JSONResponse:
    """202: the subscription's failed deliveries since `since` are queued again (bounded)."""
    require_api_token(request)
    body = await _body(request)
    since = body.get("since")
    if not isinstance(since, str):
        raise BadRequest("since: required, an RFC 3339 date-time", parameter="since")
    moment = parse_time(since, "since")
    async with writing(request) as session:
        await get_subscription(session, _sub_id(request))
        count = await replay_failed(session, _sub_id(request), moment, context_of(request).clock())
    accepted: schemas.ReplayAccepted = {"queued": count}
    return JSONResponse(accepted, status_code=202)


async def post_retry(request: Request) -> JSONResponse:
    require_api_token(request)
    delivery_id = _path_id(request, "delivery_id")
    async with writing(request) as session:
        delivery = await retry_delivery(session, delivery_id, context_of(request).clock())
        body: schemas.RetryAccepted = {"id": delivery.id, "status": delivery.status}
    return JSONResponse(body, status_code=202)


def parse_change_filter(request: Request) -> ChangeFilter:
    types: list[str] = []
    for raw in request.query_params.getlist("type"):
        for item in raw.split(","):
            if item not in CHANGE_TYPES:
                raise BadRequest(
                    f"type: {item!r} is not one of {', '.join(CHANGE_TYPES)}", parameter="type"
                )
            types.append(item)
    media = request.query_params.getlist("media_id")
    if len(media) > 1:
        raise BadRequest("media_id: given more than once", parameter="media_id")
    if media and "\x00" in media[0]:
        # No media id holds one (PostgreSQL's text cannot), and the driver raises on it.
        raise BadRequest("media_id: contains a NUL byte", parameter="media_id")
    return ChangeFilter(types=tuple(types), media_id=media[0] if media else None)


async def get_changes(request: Request) -> JSONResponse:
    """The change log after `after`, oldest first; 410 when `after` is older than retained."""
    require_api_token(request)
    _only(request, {"after", "limit", "type", "media_id"})
    after = _int_param(request, "after", 0)
    limit = _int_param(request, "limit", 1, MAX_PAGE) or DEFAULT_PAGE
    where = parse_change_filter(request)
    async with read_session(request) as session:
        if after is not None and await is_pruned(session, after):
            raise ChangesGone(
                f"after: changes after {after} were pruned (TRACKER_EVENT_RETENTION); "
                "list the jobs again and follow from the newest seq",
                parameter="after",
            )
        changes = await list_changes(session, after or 0, limit, where)
    items = [change_json(change) for change in changes]
    page: schemas.ChangePage = {
        "items": items,
        "next_after": items[-1]["seq"] if items else (after or 0),
    }
    return JSONResponse(page)


async def get_changes_stream(request: Request) -> Response:
    """Server-Sent Events: `id:` the seq, `event:` the type, `data:` the change; resumes after
    Last-Event-ID (or `?after=`), comments as heartbeats, closed after STREAM_LIFE."""
    require_api_token(request)
    _only(request, {"after", "type", "media_id"})
    after = _int_param(request, "after", 0)
    last = request.headers.get("last-event-id", "").strip()
    if last:
        if not last.isascii() or not last.isdigit() or len(last) > ID_DIGITS:
            raise BadRequest("Last-Event-ID: not a seq", parameter="Last-Event-ID")
        after = int(last)
    where = parse_change_filter(request)
    context = context_of(request)
    async with read_session(request) as session:
        if after is not None and await is_pruned(session, after):
            raise ChangesGone(f"changes after {after} were pruned", parameter="after")
        if after is None:
            after = await latest_seq(session)
    life = STREAM_LIFE
    waiters, settings = waiters_of(context.database), context.settings
    # Counted from here to the stream's end; refused (429) before any byte is sent.
    held = contextlib.ExitStack()
    held.enter_context(
        waiters.hold(caller_of(request), settings.wait_per_caller, settings.wait_max)
    )

    async def events() -> AsyncIterator[bytes]:
        cursor = after or 0
        began = last_sent = time.monotonic()
        yield b"retry: 1000\n\n"
        while time.monotonic() - began < life:
            looked = waiters.seen  # what the query below covers at least
            async with context.database.session() as session:
                changes = await list_changes(session, cursor, MAX_PAGE, where)
            for change in changes:
                body = json.dumps(change_json(change), separators=(",", ":"))
                yield f"id: {change.seq}\nevent: {change.type}\ndata: {body}\n\n".encode()
                cursor = int(change.seq or cursor)
                last_sent = time.monotonic()
            if len(changes) == MAX_PAGE:
                continue
            if time.monotonic() - last_sent >= HEARTBEAT:
                yield b": heartbeat\n\n"
                last_sent = time.monotonic()
            # Woken by the shared poller once the log moves past what the query saw (any
            # change: the filter is the query's), or for the next heartbeat.
            idle = max(STREAM_POLL, HEARTBEAT - (time.monotonic() - last_sent))
            await waiters.wait_past(looked, min(idle, life - (time.monotonic() - began)))
        yield b'event: reconnect\ndata: {"type":"reconnect"}\n\n'

    return _HeldStream(
        held,
        events(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


class _HeldStream(StreamingResponse):
    """A stream that releases its place among the held requests when it ends, however."""

    def __init__(self, held: contextlib.ExitStack, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held = held

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self.held:
            await super().__call__(scope, receive, send)


routes = [
    Route("/subscriptions", subscriptions, methods=["GET", "POST"]),
    Route("/subscriptions/{sub_id}", subscription, methods=["GET", "PATCH", "DELETE"]),
    Route("/subscriptions/{sub_id}/rotate-secret", post_rotate_secret, methods=["POST"]),
    Route("/subscriptions/{sub_id}/deliveries", get_deliveries, methods=["GET"]),
    Route("/subscriptions/{sub_id}/replay", post_replay, methods=["POST"]),
    Route("/deliveries/{delivery_id}/retry", post_retry, methods=["POST"]),
    Route("/changes", get_changes, methods=["GET"]),
    Route("/changes/stream", get_changes_stream, methods=["GET"]),
]
