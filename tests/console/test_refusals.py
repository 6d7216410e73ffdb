"""Refused callbacks are recorded by the receiver for the inbox page: why, what the signature was
computed over (never the key), bounded, and without changing what VOD is answered."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from tests.console.conftest import TOKEN, sign_in
from tracker.app import create_app
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.db import Database
from tracker.ingest import refusals
from tracker.models import CallbackRefusal
from tracker.vod import sign_callback

URL = "https://tracker.example.com/callbacks/vod"
KEY = "Secret-Auth-Key-42"
EVENT = {
    "EventTime": "2026-01-02T03:04:05Z",
    "EventType": "AIVideoTagComplete",
    "JobId": "job-1",
    "MediaId": "m-1",
    "Status": "success",
}


@pytest.fixture
async def vod_facing(database_url: str, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url,
        scheduler="off",
        notify="off",
        callback_url=URL,
        callback_auth_key=KEY,  # type: ignore[arg-type]
        api_tokens=TOKEN,  # type: ignore[arg-type]
    )
    app = create_app(settings, clock=clock)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://tracker.example.com"
        ) as http:
            yield http


def signed(clock: FrozenClock, url: str = URL, key: str = KEY, skew: int = 0) -> dict[str, str]:
    timestamp = int(clock().timestamp()) + skew
    return {
        "X-VOD-TIMESTAMP": str(timestamp),
        "X-VOD-SIGNATURE": sign_callback(url, timestamp, key),
    }


async def recorded(database: Database) -> list[CallbackRefusal]:
    async with database.session() as session:
        return list(await session.scalars(select(CallbackRefusal).order_by(CallbackRefusal.id)))


async def test_each_kind_of_refusal_is_recorded_with_why(
    vod_facing: httpx.AsyncClient, database: Database, clock: FrozenClock
) -> None:
    post = vod_facing.post
    cases = [
        ({}, "missing_signature"),
        (signed(clock, key="wrong-key"), "bad_signature"),
        (signed(clock, skew=-3600), "stale_timestamp"),
        ({"X-VOD-TIMESTAMP": "soon", "X-VOD-SIGNATURE": "x"}, "bad_timestamp"),
        # VOD configured with the http:// form of the URL: it signs that one.
        (signed(clock, url="http://tracker.example.com/callbacks/vod"), "wrong_url"),
    ]
    for headers, _reason in cases:
        response = await post("/callbacks/vod", content=json.dumps(EVENT), headers=headers)
        assert response.status_code == 401  # what VOD is told does not change
    too_big = await post("/callbacks/vod", content=b"x" * 70_000, headers=signed(clock))
    assert too_big.status_code == 413
    rows = await recorded(database)
    assert [row.reason for row in rows] == [r for _, r in cases] + ["payload_too_large"]
    for row in rows:
        text = json.dumps(
            [row.message, row.signed_over, row.detail, row.remote], ensure_ascii=False
        )
        assert KEY not in text  # never the AuthKey
    wrong = rows[4]
    assert wrong.detail["url_signed_by_vod"] == "http://tracker.example.com/callbacks/vod"
    assert "TRACKER_CALLBACK_URL" in wrong.message
    assert rows[1].signed_over == f"{URL}|{int(clock().timestamp())}|<AuthKey>"
    assert rows[2].detail["skew_s"] == 3600.0


async def test_a_good_callback_is_no_refusal(
    vod_facing: httpx.AsyncClient, database: Database, clock: FrozenClock
) -> None:
    ok = await vod_facing.post("/callbacks/vod", content=json.dumps(EVENT), headers=signed(clock))
    assert ok.status_code == 200
    assert await recorded(database) == []


async def test_refusals_are_bounded_in_number_age_and_rate(
    vod_facing: httpx.AsyncClient,
    database: Database,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(refusals, "KEPT", 5)
    monkeypatch.setattr(refusals, "BURST", 8.0)
    monkeypatch.setattr(refusals, "RATE", 0.0001)  # the bucket does not refill during the test
    for _ in range(12):
        await vod_facing.post("/callbacks/vod", content=b"{}", headers={})
    rows = await recorded(database)
    assert len(rows) == 5  # the last KEPT
    async with database.session() as session:
        assert await session.scalar(select(func.count()).select_from(CallbackRefusal)) == 5
    # 8 recorded one by one (the burst), the rest sampled into the next row once it refills.
    monkeypatch.setattr(refusals, "RATE", 1e9)
    await vod_facing.post("/callbacks/vod", content=b"{}", headers={})
    assert (await recorded(database))[-1].count == 1 + 4
    clock.advance(timedelta(hours=25))  # older than a day: gone with the next refusal
    await vod_facing.post("/callbacks/vod", content=b"{}", headers={})
    assert len(await recorded(database)) == 1


async def test_the_inbox_page_shows_refusals_escaped_and_without_the_key(
    vod_facing: httpx.AsyncClient, database: Database, clock: FrozenClock
) -> None:
    evil = '<img src=x onerror="alert(1)">'
    headers = {**signed(clock, key="nope"), "User-Agent": evil}
    await vod_facing.post("/callbacks/vod", content=json.dumps(EVENT), headers=headers)
    await sign_in(vod_facing)
    page = (await vod_facing.get("/ui/inbox")).text
    assert "bad signature" in page
    assert f"{URL}|{int(clock().timestamp())}|&lt;AuthKey&gt;" in page
    assert "<img" not in page
    assert "&lt;img src=x" in page
    assert KEY not in page
