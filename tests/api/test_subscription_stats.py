"""Subscriptions in GET /stats and on the console: counts, and why the disabled ones are."""

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


async def test_console_lists_subscriptions_with_why_disabled_escaped(
    client: httpx.AsyncClient, database: Database, clock: FrozenClock
) -> None:
    await add_subscription(database, at=clock(), deliveries=STATUSES)
    disabled_at = clock() - timedelta(hours=1)
    await add_subscription(
        database, at=clock(), disabled_at=disabled_at, deliveries=["failed", "skipped"], **DISABLED
    )
    page = (await client.get("/ui/subscriptions")).text
    assert "<img" not in page
    rows = page.split('id="subscriptions"')[1].split("</table>")[0].split("<tr>")[2:]
    healthy, dead = rows
    escaped = "&lt;img src=x onerror=&#34;document.title=&#39;pwned&#39;&#34;&gt;"
    assert f"https://hooks.example.com/in?q={escaped}" in dead
    assert f"the receiver answered 410 Gone {escaped}" in dead
    assert "disabled" in dead
    assert "enabled" in healthy
    # backlog (pending and sending) and dead letters, per subscription
    assert [cell.split("<")[0] for cell in healthy.split('<td class="n">')[2:]] == ["3", "1"]
    assert [cell.split("<")[0] for cell in dead.split('<td class="n">')[2:]] == ["0", "1"]


async def test_console_without_subscriptions_says_so(client: httpx.AsyncClient) -> None:
    page = (await client.get("/ui/subscriptions")).text
    assert "No subscription yet" in page


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


async def test_a_subscription_the_relay_disables_shows_in_stats_and_console(
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
        page = (await http.get(f"/ui/subscriptions/{dead['id']}")).text
        assert gone.url in page
        assert '<span class="badge s-lost" id="sub-state">disabled</span>' in page
        assert "the receiver answered 410 Gone" in page.split('id="disabled-reason"')[1]
