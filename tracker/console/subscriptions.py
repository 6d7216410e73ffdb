"""`/ui/subscriptions` and their buttons: retry a failed delivery, replay since a time (the
count first), send a test, enable or disable, rotate the secret (shown once).

Every button is a form POST carrying the session's CSRF token, behind the app's same-origin
guard; each calls the same `tracker.notify` function as the JSON API, in one unit of work.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tracker.api.notify import writing
from tracker.api.subscriptions import list_deliveries
from tracker.console import reads
from tracker.console.jobs import _time
from tracker.console.web import checked_form, flash, page, reading, render
from tracker.context import context_of
from tracker.errors import BadRequest, NotFound
from tracker.models import Delivery
from tracker.notify.deliveries import REPLAY_LIMIT, replay_failed, retry_delivery
from tracker.notify.pings import list_pings, new_ping_id, ping_subscription
from tracker.notify.subscriptions import (
    SubscriptionInput,
    get_subscription,
    list_subscriptions,
    rotate_secret,
    update_subscription,
)

PINGS_SHOWN = 10  # the newest test pings on the subscription's page (the API lists all kept)


def _id(request: Request, name: str) -> int:
    raw = request.path_params[name]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"no such id {raw!r}")
    return int(raw)


@page
async def subscriptions_page(request: Request) -> Response:
    async with reading(request) as session:
        subs = list(await list_subscriptions(session))
        health = {sub.id: await reads.subscription_health(session, sub) for sub in subs}
    return render(request, "subscriptions.html", subs=subs, health=health, cap=reads.COUNT_CAP)


def _cursor(request: Request) -> int | None:
    raw = request.query_params.get("before")
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise BadRequest("before: not a delivery id")
    return int(raw)


@page
async def subscription_page(request: Request) -> Response:
    return await _subscription(request, _id(request, "sub_id"), _cursor(request))


async def _subscription(
    request: Request, sub_id: int, before: int | None = None, secret: str | None = None
) -> Response:
    """A subscription's page: health, deliveries from `before` on, the latest test pings, and
    a new `secret` when this answer is the one that shows it."""
    async with reading(request) as session:
        sub = await get_subscription(session, sub_id)
        health = await reads.subscription_health(session, sub)
        items, next_cursor = await list_deliveries(session, sub_id, limit=50, before=before)
        pings = await list_pings(session, sub_id, PINGS_SHOWN)
    return render(
        request,
        "subscription.html",
        sub=sub,
        health=health,
        cap=reads.COUNT_CAP,
        deliveries=items,
        next_url=(
            f"/ui/subscriptions/{sub_id}?" + urlencode({"before": next_cursor})
            if next_cursor
            else None
        ),
        paged=before is not None,
        pings=pings,
        secret=secret,
    )


def _back(sub_id: int) -> RedirectResponse:
    return RedirectResponse(f"/ui/subscriptions/{sub_id}", status_code=303)


@page
async def set_enabled(request: Request) -> Response:
    await checked_form(request)
    sub_id = _id(request, "sub_id")
    enable = request.url.path.endswith("/enable")
    context = context_of(request)
    async with writing(request) as session:
        sub = await update_subscription(
            session, sub_id, SubscriptionInput(enabled=enable), context.clock()
        )
        enabled = sub.enabled
    flash(request, "enabled: deliveries start from the next change" if enabled else "disabled")
    return _back(sub_id)


@page
async def send_test(request: Request) -> Response:
    """Sends a signed `ping` now, records it (listed with the deliveries, marked as a test) and
    shows what the receiver answered."""
    await checked_form(request)
    sub_id = _id(request, "sub_id")
    context = context_of(request)
    async with reading(request) as session:
        sub = await get_subscription(session, sub_id)
    result = await ping_subscription(
        context.database, context.settings, sub, context.clock(), new_ping_id()
    )
    if result.ok:
        flash(
            request, f"test ping answered HTTP {result.status_code} in {result.duration_ms:.0f} ms"
        )
    else:
        answer = f"HTTP {result.status_code}" if result.status_code else result.error
        flash(request, f"test ping failed: {answer}", "error")
    return _back(sub_id)


@page
async def rotate(request: Request) -> Response:
    """A new secret, shown in this answer only: never stored in the cookie or a redirect."""
    await checked_form(request)
    sub_id = _id(request, "sub_id")
    context = context_of(request)
    async with writing(request) as session:
        sub = await rotate_secret(session, sub_id, context.clock())
        secret = sub.secret
    return await _subscription(request, sub_id, secret=secret)


async def _failed_since(request: Request, sub_id: int, since: datetime) -> int:
    async with reading(request) as session:
        await get_subscription(session, sub_id)
        inner = (
            select(Delivery.id)
            .where(
                Delivery.subscription_id == sub_id,
                Delivery.status == "failed",
                Delivery.created_at >= since,
            )
            .limit(REPLAY_LIMIT)
            .subquery()
        )
        return int(await session.scalar(select(func.count()).select_from(inner)) or 0)


@page
async def replay(request: Request) -> Response:
    """GET: how many failed deliveries a replay since `since` would send again; POST: do it."""
    sub_id = _id(request, "sub_id")
    if request.method == "POST":
        form = await checked_form(request)
        since = _since(form.get("since"))
        context = context_of(request)
        async with writing(request) as session:
            await get_subscription(session, sub_id)
            count = await replay_failed(session, sub_id, since, context.clock())
        flash(request, f"{count} failed deliveries queued again (one attempt each)")
        return _back(sub_id)
    since = _since(request.query_params.get("since"))
    count = await _failed_since(request, sub_id, since)
    return render(
        request,
        "replay.html",
        sub_id=sub_id,
        since=since,
        since_raw=request.query_params.get("since", ""),
        count=count,
        limit=REPLAY_LIMIT,
    )


def _since(raw: Any) -> datetime:
    if not isinstance(raw, str) or not raw.strip():
        raise BadRequest("since: a date and time (UTC) is required; a replay never means 'all'")
    return _time(raw.strip(), "since")


@page
async def retry(request: Request) -> Response:
    await checked_form(request)
    delivery_id = _id(request, "delivery_id")
    context = context_of(request)
    async with writing(request) as session:
        delivery = await retry_delivery(session, delivery_id, context.clock())
        sub_id, status = delivery.subscription_id, delivery.status
    flash(request, f"delivery {delivery_id} {'queued again' if status == 'pending' else status}")
    return _back(sub_id)
