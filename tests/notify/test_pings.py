"""Test pings: `POST /subscriptions/{id}/test` against a real receiver on loopback, what it came
to recorded (answered, refused, unreachable) and listed by `GET /subscriptions/{id}/pings`;
bounded per subscription; never a secret; the subscription's health left alone."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from aiohttp import web
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from tests.factories import T0, add_subscription
from tests.notify.receivers import Receiver
from tests.notify.test_delivery import notify_settings, subscribe
from tracker.app import create_app
from tracker.db import Database
from tracker.models import Subscription, SubscriptionPing
from tracker.notify.attempts import BODY_KEPT, AttemptResult
from tracker.notify.pings import PINGS_KEPT, list_pings, record_ping


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app without its relay: only pings reach the receivers."""
    app = create_app(notify_settings(database_url, notify="off"))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            yield http


async def ping(http: httpx.AsyncClient, sub_id: int) -> dict[str, Any]:
    """One ping, then its record: the background task has run when the ASGI call returns."""
    accepted = await http.post(f"/subscriptions/{sub_id}/test")
    assert accepted.status_code == 202, accepted.text
    webhook_id = accepted.json()["webhook_id"]
    listed = await http.get(f"/subscriptions/{sub_id}/pings")
    assert listed.status_code == 200
    found = [item for item in listed.json()["items"] if item["webhook_id"] == webhook_id]
    assert len(found) == 1, listed.json()
    item: dict[str, Any] = found[0]
    return item


async def test_an_answered_ping_is_recorded_with_its_status_latency_and_answer(
    api: httpx.AsyncClient,
) -> None:
    async def ok(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=200, text="pong from the receiver")

    receiver = Receiver(behaviour=ok)
    await receiver.start()
    try:
        sub = await subscribe(api, receiver.url)
        receiver.secret = sub["secret"]
        item = await ping(api, sub["id"])
    finally:
        await receiver.stop()
    assert receiver.received[0].verified  # signed, as any delivery is
    assert receiver.received[0].payload["type"] == "ping"
    assert receiver.received[0].headers["webhook-id"] == item["webhook_id"]
    assert item["webhook_id"].startswith("ping_")
    assert item["subscription_id"] == sub["id"]
    assert item["status_code"] == 200
    assert item["error"] is None
    assert item["response_body"] == "pong from the receiver"
    assert 0 < item["duration_ms"] < 5_000
    assert item["attempted_at"].endswith("Z")
    assert sub["secret"] not in json.dumps(item)


async def test_a_refused_ping_is_recorded_with_a_bounded_answer_and_no_secret(
    api: httpx.AsyncClient, database: Database
) -> None:
    async def refuse(request: web.Request, n: int) -> web.StreamResponse:
        # Echoes what it was sent, then far more than is kept.
        echoed = json.dumps(dict(request.headers)) + "x" * (BODY_KEPT * 4)
        return web.Response(status=500, text=echoed)

    receiver = Receiver(behaviour=refuse)
    await receiver.start()
    try:
        sub = await subscribe(api, receiver.url)
        item = await ping(api, sub["id"])
    finally:
        await receiver.stop()
    assert item["status_code"] == 500
    assert len(item["response_body"]) == BODY_KEPT
    async with database.session() as session:
        row = await session.scalar(select(SubscriptionPing))
        stored = await session.get(Subscription, sub["id"])
    assert row is not None
    assert stored is not None
    for value in (row.webhook_id, row.error or "", row.response_body or ""):
        assert sub["secret"] not in value
        assert sub["secret"].removeprefix("whsec_") not in value
    # A ping is a test: a failing one neither starts a failing streak nor counts as a success.
    assert stored.first_failure_at is None
    assert stored.last_success_at is None
    assert stored.enabled


async def test_an_unreachable_receiver_is_recorded_as_an_error(api: httpx.AsyncClient) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sub = await subscribe(api, f"http://127.0.0.1:{port}/hook")
    item = await ping(api, sub["id"])
    assert item["status_code"] is None
    assert item["error"]
    assert item["response_body"] is None
    assert item["duration_ms"] >= 0


async def test_pings_list_newest_first_and_unknown_ids_are_404(
    api: httpx.AsyncClient, database: Database
) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        sub = await subscribe(api, receiver.url)
        first = await ping(api, sub["id"])
        second = await ping(api, sub["id"])
    finally:
        await receiver.stop()
    items = (await api.get(f"/subscriptions/{sub['id']}/pings")).json()["items"]
    assert [i["id"] for i in items] == [second["id"], first["id"]]
    assert [i["status_code"] for i in items] == [204, 204]
    # Pings are not deliveries: the deliveries listing is unchanged by them.
    assert (await api.get(f"/subscriptions/{sub['id']}/deliveries")).json()["items"] == []
    for path, code in [
        ("/subscriptions/999/pings", "subscription_not_found"),
        ("/subscriptions/x/pings", "not_found"),
    ]:
        missing = await api.get(path)
        assert missing.status_code == 404
        assert missing.json()["error"] == code
    assert (await api.post("/subscriptions/999/test")).status_code == 404
    odd = await api.get(f"/subscriptions/{sub['id']}/pings", params={"limit": "5"})
    assert odd.status_code == 400
    # Deleting the subscription takes its pings with it.
    assert (await api.delete(f"/subscriptions/{sub['id']}")).status_code == 204
    async with database.session() as session:
        assert await session.scalar(select(func.count()).select_from(SubscriptionPing)) == 0


async def test_only_the_newest_pings_of_each_subscription_are_kept(database: Database) -> None:
    busy = await add_subscription(database)
    quiet = await add_subscription(database)
    async with database.write() as session:
        assert await record_ping(session, quiet, "ping_quiet", AttemptResult(204, 1.0), T0)
    for n in range(PINGS_KEPT + 5):
        async with database.write() as session:
            result = AttemptResult(200 + n % 2, float(n), body=f"answer {n}")
            at = T0 + timedelta(seconds=n)
            assert await record_ping(session, busy, f"ping_{n}", result, at)
    async with database.session() as session:
        kept = await list_pings(session, busy)
        others = await list_pings(session, quiet)
    assert len(kept) == PINGS_KEPT
    assert kept[0].webhook_id == f"ping_{PINGS_KEPT + 4}"
    assert kept[-1].webhook_id == "ping_5"  # the five oldest were dropped
    assert [p.webhook_id for p in others] == ["ping_quiet"]  # another subscription's stay


async def test_a_ping_for_a_deleted_subscription_records_nothing(database: Database) -> None:
    sub_id = await add_subscription(database)
    async with database.write() as session:
        await session.delete(await session.get(Subscription, sub_id))
    async with database.write() as session:
        assert not await record_ping(session, sub_id, "ping_late", AttemptResult(204, 1.0), T0)
    async with database.session() as session:
        assert await session.scalar(select(func.count()).select_from(SubscriptionPing)) == 0
