"""Delivery's limits, tried as a careless receiver or operator would: a cap on subscriptions, a
Retry-After of any size, a retry asked of a disabled subscription."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from tests.factories import add_job
from tests.notify.receivers import Receiver
from tests.notify.test_delivery import deliveries, finish, running, settled, subscribe
from tracker.db import Database
from tracker.models import JobState
from tracker.notify.post import MAX_RETRY_AFTER


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    await rx.start()
    yield rx
    await rx.stop()


async def test_subscriptions_beyond_the_cap_are_a_clear_409_and_change_nothing(
    database_url: str, receiver: Receiver
) -> None:
    async with running(database_url, notify_max_subscriptions=3) as live:
        for n in range(3):
            await subscribe(live, f"{receiver.url}/{n}")
        answer = await live.post("/subscriptions", json={"url": f"{receiver.url}/3"})
        assert answer.status_code == 409, answer.text
        body = answer.json()
        assert body["error"] == "too_many_subscriptions"
        assert "TRACKER_NOTIFY_MAX_SUBSCRIPTIONS is 3" in body["message"]
        assert len((await live.get("/subscriptions")).json()["items"]) == 3
        first = (await live.get("/subscriptions")).json()["items"][0]["id"]
        assert (await live.delete(f"/subscriptions/{first}")).status_code == 204
        await subscribe(live, f"{receiver.url}/3")  # room again


async def test_the_cap_defaults_to_a_hundred(database_url: str, receiver: Receiver) -> None:
    async with running(database_url) as live:
        for n in range(100):
            await subscribe(live, f"{receiver.url}/{n}")
        answer = await live.post("/subscriptions", json={"url": f"{receiver.url}/100"})
        assert answer.status_code == 409, answer.text


@pytest.mark.parametrize(
    "value",
    ["99999999999999999999", "9" * 400, "Fri, 31 Dec 9999 23:59:59 GMT"],
    ids=["20-digits", "400-digits", "far-date"],
)
async def test_any_retry_after_is_clamped_to_a_day(
    database_url: str,
    receiver: Receiver,
    database: Database,
    caplog: pytest.LogCaptureFixture,
    value: str,
) -> None:
    async def busy(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=429, headers={"Retry-After": value})

    receiver.behaviour = busy
    caplog.set_level("WARNING")
    async with running(database_url) as live:
        await subscribe(live, receiver.url, event_types=["job.succeeded"])
        await add_job(database, "j1", JobState.PROCESSING)
        await finish(database, "j1")
        await receiver.wait_for(1)
        for _ in range(100):
            (delivery,) = await deliveries(database)
            if delivery.attempts == 1:
                break
            await asyncio.sleep(0.05)
    assert (delivery.status, delivery.last_error) == ("pending", "HTTP 429")
    assert delivery.next_attempt_at is not None
    wait = delivery.next_attempt_at - datetime.now(UTC)
    assert MAX_RETRY_AFTER - timedelta(minutes=1) < wait <= MAX_RETRY_AFTER
    assert not [r for r in caplog.records if r.exc_info or "Overflow" in r.getMessage()]


async def test_retrying_a_delivery_of_a_disabled_subscription_is_a_409_that_says_why(
    database_url: str, receiver: Receiver, database: Database
) -> None:
    async def gone(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=410)

    receiver.behaviour = gone
    async with running(database_url) as live:
        sub = await subscribe(live, receiver.url, event_types=["job.succeeded"])
        await add_job(database, "j1", JobState.PROCESSING)
        await finish(database, "j1")
        await settled(database, "failed")
        (dead,) = await deliveries(database)
        answer = await live.post(f"/deliveries/{dead.id}/retry")
        assert answer.status_code == 409, answer.text
        body = answer.json()
        assert body["error"] == "subscription_disabled"
        assert "410" in body["message"]
        assert body["subscription_id"] == sub["id"]
        replay = await live.post(
            f"/subscriptions/{sub['id']}/replay", json={"since": "2000-01-01T00:00:00Z"}
        )
        assert replay.status_code == 409, replay.text
        assert [d.status for d in await deliveries(database)] == ["failed"]  # no change
        # Enabled again when asked explicitly, the retry is accepted and sent.
        receiver.behaviour = lambda request, n: _ok()
        enabled = await live.patch(f"/subscriptions/{sub['id']}", json={"enabled": True})
        assert enabled.status_code == 200, enabled.text
        assert (await live.post(f"/deliveries/{dead.id}/retry")).status_code == 202
        await settled(database, "succeeded")
    assert len(receiver.received) == 2


async def _ok() -> web.StreamResponse:
    return web.Response(status=204)
