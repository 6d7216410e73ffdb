"""Long-polls and streams do not starve VOD's callbacks (issue 23, P4): they are capped per caller
and in all (429 with Retry-After beyond), and one shared poller wakes them, so the database sees
a handful of queries a second however many wait."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from tests.conftest import LiveServer
from tests.factories import add_job
from tracker.api import notify as notify_api
from tracker.app import create_app
from tracker.config import Settings
from tracker.context import context_of
from tracker.db import Database
from tracker.models import JobState
from tracker.notify.stream import waiters_of
from tracker.vod.signing import sign_callback

URL = "https://tracker.example.com/callbacks/vod"
KEY = "callback-key"
A, B = "token-a-0123456789", "token-b-0123456789"
PER_CALLER, MOST = 40, 60
CALLBACKS = 30


def signed(n: int) -> tuple[dict[str, str], dict[str, str]]:
    timestamp = int(time.time())
    headers = {
        "X-VOD-TIMESTAMP": str(timestamp),
        "X-VOD-SIGNATURE": sign_callback(URL, timestamp, KEY),
    }
    body = {
        "EventTime": "2026-01-02T03:04:05Z",
        "EventType": "AIMediaDNAComplete",
        "JobId": f"{n:032x}",
        "MediaId": f"media-{n}",
        "Status": "success",
        "Data": "{}",
    }
    return headers, body


async def test_waiters_are_capped_and_callbacks_stay_answered(database_url: str) -> None:
    settings = Settings(
        database_url=database_url,
        scheduler="off",
        notify="off",
        api_tokens=f"{A},{B}",  # type: ignore[arg-type]
        callback_url=URL,
        callback_auth_key=KEY,  # type: ignore[arg-type]
        wait_per_caller=PER_CALLER,
        wait_max=MOST,
    )
    stuck = Database(database_url)
    await add_job(stuck, "f" * 32, JobState.PROCESSING, media_id="m-stuck")
    await stuck.dispose()
    app = create_app(settings)
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    with LiveServer(app) as base:
        engine = context_of(app).database.engine.sync_engine
        event.listen(engine, "before_cursor_execute", count)

        async def wait(token: str) -> httpx.Response:
            async with httpx.AsyncClient(base_url=base, timeout=90, limits=limits) as http:
                return await http.get(
                    f"/jobs/{'f' * 32}",
                    params={"wait": "20s"},
                    headers={"Authorization": f"Bearer {token}"},
                )

        # One caller asks for more than its share: the rest of its requests are refused.
        held_a = [asyncio.create_task(wait(A)) for _ in range(PER_CALLER + 10)]
        refused_a = [r for r in await _settled(held_a, 10) if r.status_code == 429]
        assert len(refused_a) == 10
        assert "TRACKER_WAIT_PER_CALLER" in refused_a[0].json()["message"]
        # Another caller has a share of its own, up to the server's most.
        held_b = [asyncio.create_task(wait(B)) for _ in range(MOST - PER_CALLER + 5)]
        refused_b = [r for r in await _settled(held_b, 5) if r.status_code == 429]
        assert len(refused_b) == 5
        assert "TRACKER_WAIT_MAX" in refused_b[0].json()["message"]
        assert {r.headers["retry-after"] for r in refused_a + refused_b} == {"5"}
        waiting = [t for t in held_a + held_b if not t.done()]
        assert len(waiting) == MOST

        # While they wait, the database sees the shared poller, not one query per waiter.
        hub = waiters_of(context_of(app).database)
        for _ in range(300):
            if hub.waiting == MOST:
                break
            await asyncio.sleep(0.1)
        assert hub.waiting == MOST
        before = statements
        await asyncio.sleep(1.0)
        assert statements - before < MOST // 2, statements - before

        # Signed callbacks all answered 200 while the waiters are held.
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
            answers = await asyncio.gather(
                *(
                    http.post("/callbacks/vod", json=b, headers=h)
                    for h, b in map(signed, range(CALLBACKS))
                )
            )
        assert [a.status_code for a in answers] == [200] * CALLBACKS
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        event.remove(engine, "before_cursor_execute", count)


async def _settled(tasks: list[asyncio.Task[httpx.Response]], count: int) -> list[httpx.Response]:
    """The answers of the first `count` requests to finish (the refused ones answer at once)."""
    done: list[httpx.Response] = []
    for finished in asyncio.as_completed(tasks):
        done.append(await finished)
        if len(done) == count:
            break
    return done


async def test_streams_and_long_polls_share_the_cap(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify_api, "STREAM_LIFE", 5.0)
    settings = Settings(
        database_url=database_url,
        scheduler="off",
        notify="off",
        api_tokens=A,  # type: ignore[arg-type]
        wait_per_caller=1,
    )
    auth = {"Authorization": f"Bearer {A}"}
    with LiveServer(create_app(settings)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=auth) as http:
            async with http.stream("GET", "/changes/stream") as first:
                assert first.status_code == 200
                second = await http.get("/changes/stream")
                assert second.status_code == 429
                assert second.headers["retry-after"] == "5"
                assert second.json()["error"] == "too_many_waiting"
            # Once the stream has ended its place is free again.
            for _ in range(100):
                again = await http.get("/changes/stream", params={"after": 0})
                if again.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert again.status_code == 200
