"""Subscriptions in GET /stats and on the dashboard: counts, and the disabled ones listed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
from aiohttp import web
from asgi_lifespan import LifespanManager

from tests.factories import add_job, add_subscription
from tests.notify.receivers import Receiver
from tests.notify.test_delivery import finish, notify_settings, settled, subscribe
from tracker.app import create_app
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import JobState

EVIL = "<img src=x onerror=\"document.title='pwned'\">"


# The disabled subscription: its URL, description and reason carry markup the pages must escape.
DISABLED: dict[str, Any] = {
    "enabled": False,
    "url": f"https://hooks.example.com/in?q={EVIL}",
    "description": EVIL,
    "disabled_reason": f"the receiver answered 410 Gone {EVIL}",
}
STATUSES = ["pending", "pending", "sending", "succeeded", "failed"]  # the enabled one's deliveries


async def test_stats_count_subscriptions_and_their_deliveries(
    client: httpx.AsyncClient, database: Database, clock: FrozenClock
) -> None:
    assert (await client.get("/stats")).json()["subscriptions"] == {
        "enabled": 0,
        "disabled": 0,
        "deliveries_pending": 0,
        "deliveries_failed": 0,
    }
    await add_subscription(database, at=clock(), deliveries=STATUSES)
    disabled_at = clock() - timedelta(hours=1)
    await add_subscription(
        database, at=clock(), disabled_at=disabled_at, deliveries=["failed", "skipped"], **DISABLED
    )
    clock.advance(timedelta(minutes=5))  # past the cache's max_age: fresh figures
    assert (await client.get("/stats")).json()["subscriptions"] == {
        "enabled": 1,
        "disabled": 1,
        "deliveries_pending": 3,  # pending and sending
        "deliveries_failed": 2,
    }


async def test_dashboard_lists_disabled_subscriptions_escaped(
    client: httpx.AsyncClient, database: Database, clock: FrozenClock
) -> None:
    await add_subscription(database, at=clock(), deliveries=STATUSES)
    disabled_at = clock() - timedelta(hours=1)
    await add_subscription(
        database, at=clock(), disabled_at=disabled_at, deliveries=["failed", "skipped"], **DISABLED
    )
    page = (await client.get("/")).text
    assert "<img" not in page
    assert '<b id="subscriptions-enabled">1</b>' in page
    assert '<b id="subscriptions-disabled">1</b>' in page
    assert '<span id="deliveries-failed">2</span>' in page
    panel = page.split('id="disabled-subscriptions"')[1].split("</table>")[0]
    escaped = "&lt;img src=x onerror=&quot;document.title=&#x27;pwned&#x27;&quot;&gt;"
    assert f"https://hooks.example.com/in?q={escaped}" in panel
    assert f"the receiver answered 410 Gone {escaped}" in panel
    assert "hooks.example.com/1" not in panel  # the enabled one is not listed


async def test_dashboard_without_disabled_subscriptions_says_so(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/")).text
    assert '<p id="disabled-subscriptions" class="muted">no disabled subscriptions</p>' in page


@asynccontextmanager
async def receiver_answering(status: int) -> AsyncIterator[Receiver]:
    async def answer(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=status)

    rx = Receiver(behaviour=answer)
    await rx.start()
    try:
        yield rx
    finally:
        await rx.stop()


async def test_a_subscription_the_relay_disables_shows_in_stats_and_dashboard(
    database_url: str, database: Database
) -> None:
    app = create_app(notify_settings(database_url))
    async with (
        receiver_answering(410) as gone,
        receiver_answering(204) as ok,
        LifespanManager(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as http,
    ):
        dead = await subscribe(http, gone.url, event_types=["job.succeeded"])
        await subscribe(http, ok.url, event_types=["job.succeeded"])
        await add_job(database, "j1", JobState.PROCESSING)
        await finish(database, "j1")
        await settled(database, "failed")
        await settled(database, "succeeded")
        # The first figures of this process: computed now, after the relay disabled it.
        assert (await http.get("/stats")).json()["subscriptions"] == {
            "enabled": 1,
            "disabled": 1,
            "deliveries_pending": 0,
            "deliveries_failed": 1,
        }
        page = (await http.get("/")).text
        panel = page.split('id="disabled-subscriptions"')[1].split("</table>")[0]
        assert f'<td class="n">{dead["id"]}</td><td>{gone.url}</td>' in panel
        assert "the receiver answered 410 Gone" in panel
        assert ok.url not in panel
