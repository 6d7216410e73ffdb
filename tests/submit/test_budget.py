"""The spend guard through POST /jobs: durations from VOD, the daily budget (atomic under
concurrency, reset at UTC midnight, minutes given back), dry runs, and what it shows (/stats,
/metrics, the change log, webhooks)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import TypeAdapter
from sqlalchemy import select

from tests.notify.receivers import Receiver
from tests.submit.simulator import RefusingVod, jobs_of, vod_settings
from tracker.api.budget import DryRun
from tracker.app import create_app
from tracker.clock import Clock, FrozenClock, utcnow
from tracker.db import Database
from tracker.models import Budget, JobState
from tracker.shapes import Change
from tracker.submit.budget import BudgetRefusal

TEN_MINUTES = 600.0
Api = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def api(database_url: str, fake: RefusingVod) -> AsyncIterator[Api]:
    """`await api(clock, **settings)`: the app against the simulator, with these settings."""
    stack: list[Any] = []

    async def start(clock: Clock = utcnow, **settings: Any) -> httpx.AsyncClient:
        values = {"api_tokens": "t0ken", "vod_retries": 1, **settings}
        app = create_app(vod_settings(database_url, fake.url, **values), clock=clock)
        manager = LifespanManager(app)
        await manager.__aenter__()
        stack.append(manager)
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://127.0.0.1",
            headers={"Authorization": "Bearer t0ken"},
        )
        stack.append(http)
        return http

    yield start
    for item in reversed(stack):
        await item.__aexit__(None, None, None)


async def budget_rows(database: Database) -> dict[tuple[str, str], Budget]:
    async with database.session() as session:
        rows = await session.scalars(select(Budget))
        return {(row.day.isoformat(), row.type): row for row in rows}


def post(http: httpx.AsyncClient, media_id: str, *types: str, **more: Any) -> Any:
    return http.post("/jobs", json={"media_id": media_id, "types": list(types), **more})


async def test_twelve_concurrent_submissions_under_a_30_minute_budget_accept_exactly_3(
    api: Api, fake: RefusingVod, database: Database
) -> None:
    fake.faults.duration = TEN_MINUTES
    http = await api(daily_minutes={"AIVideoTag": 30})
    answers = await asyncio.gather(*(post(http, f"m{n}", "AIVideoTag") for n in range(12)))

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] * 3 + [429] * 9, [a.text for a in answers]
    assert fake.submit_calls == 3
    assert len(fake.jobs) == 3
    jobs = await jobs_of(database)
    assert len(jobs) == 3  # the refused ones claimed nothing: no job left submitting
    assert {job.state for job in jobs} == {JobState.PROCESSING}
    assert {job.duration_s for job in jobs} == {TEN_MINUTES}
    (row,) = (await budget_rows(database)).values()
    assert (row.type, row.used_ms, row.jobs, row.limit_ms) == (
        "AIVideoTag",
        1_800_000,
        3,
        1_800_000,
    )

    refusal = next(a for a in answers if a.status_code == 429)
    body = TypeAdapter(BudgetRefusal).validate_python(refusal.json(), strict=True)
    tomorrow = datetime.combine(datetime.now(UTC).date() + timedelta(days=1), datetime.min.time())
    assert body["error"] == "budget_exceeded"
    assert (body["type"], body["minutes_requested"], body["minutes_left"]) == (
        "AIVideoTag",
        10.0,
        0.0,
    )
    assert body["resets_at"] == tomorrow.isoformat() + "Z"
    wait = int(refusal.headers["Retry-After"])
    assert 0 < wait <= 86400
    accepted = [a.json()["jobs"][0] for a in answers if a.status_code == 201]
    assert {job["duration_s"] for job in accepted} == {TEN_MINUTES}


async def test_the_budget_resets_at_utc_midnight(
    api: Api, fake: RefusingVod, database: Database
) -> None:
    fake.faults.duration = TEN_MINUTES
    clock = FrozenClock(datetime(2026, 3, 4, 23, 59, 30, tzinfo=UTC))
    http = await api(clock, daily_minutes={"AIVideoTag": 15, "AIMediaDNA": 100})
    assert (await post(http, "m1", "AIVideoTag", "AIMediaDNA")).status_code == 201

    refused = await post(http, "m2", "AIVideoTag", "AIMediaDNA")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "30"
    assert refused.json()["resets_at"] == "2026-03-05T00:00:00Z"
    assert refused.json()["minutes_left"] == 5.0
    # Refused as a whole: the fingerprint fits, but nothing of it was reserved or sent.
    rows = await budget_rows(database)
    assert rows["2026-03-04", "AIMediaDNA"].used_ms == 600_000
    assert fake.submit_calls == 1

    clock.advance(timedelta(seconds=30))  # 00:00:00 UTC: a new day, a new budget
    assert (await post(http, "m2", "AIVideoTag", "AIMediaDNA")).status_code == 201
    rows = await budget_rows(database)
    assert rows["2026-03-05", "AIVideoTag"].used_ms == 600_000
    assert rows["2026-03-04", "AIVideoTag"].used_ms == 600_000
    stats = (await http.get("/stats")).json()["budget"]
    assert stats["AIVideoTag"] == {
        "day": "2026-03-05",
        "minutes_used": 10.0,
        "minutes_limit": 15.0,
        "minutes_left": 5.0,
        "jobs": 1,
        "exhausted_at": None,
    }


async def test_minutes_come_back_when_vod_refuses_and_stay_when_the_outcome_is_unknown(
    api: Api, fake: RefusingVod, database: Database
) -> None:
    fake.faults.duration = TEN_MINUTES
    http = await api(daily_minutes={"AIVideoTag": 20})
    fake.refuse = {"refused"}
    answer = await post(http, "refused", "AIVideoTag")
    assert answer.status_code == 502
    assert answer.json()["jobs"][0]["state"] == "submit_failed"
    (row,) = (await budget_rows(database)).values()
    assert (row.used_ms, row.jobs) == (0, 0)  # given back: VOD created nothing

    fake.faults.lose_submit_next = 1  # VOD creates the job, its answer never comes
    lost = await post(http, "lost", "AIVideoTag")
    assert lost.status_code == 504
    assert lost.json()["jobs"][0]["state"] == "submit_unknown"
    (row,) = (await budget_rows(database)).values()
    assert (row.used_ms, row.jobs) == (600_000, 1)  # kept: VOD may charge for it

    assert (await post(http, "ok", "AIVideoTag")).status_code == 201
    assert (await post(http, "over", "AIVideoTag")).status_code == 429


async def test_a_media_vod_does_not_know_is_refused_before_any_submit(
    api: Api, fake: RefusingVod, database: Database
) -> None:
    http = await api(daily_minutes={"AIVideoTag": 20})
    fake.media.remove("gone")
    answer = await post(http, "gone", "AIVideoTag", "AIMediaDNA")
    assert answer.status_code == 404
    assert answer.json()["error"] == "media_not_found"
    assert answer.json()["parameter"] == "media_id"
    assert (fake.submit_calls, fake.refused) == (0, {"InvalidVideo.NotFound": 1})
    assert await jobs_of(database) == []
    assert await budget_rows(database) == {}
    dry = await post(http, "gone", "AIVideoTag", dry_run=True)
    assert dry.status_code == 404


async def test_a_media_not_analysed_yet_waits_only_where_a_budget_needs_its_duration(
    api: Api, fake: RefusingVod, database: Database
) -> None:
    fake.media.add("new", None, status="Uploading")
    http = await api(daily_minutes={"AIVideoTag": 20})
    answer = await post(http, "new", "AIVideoTag")
    assert answer.status_code == 409
    assert answer.json()["error"] == "duration_unknown"
    assert fake.submit_calls == 0
    # No limit on fingerprinting: submitted, its duration unknown, nothing counted.
    answer = await post(http, "new", "AIMediaDNA")
    assert answer.status_code == 201
    assert answer.json()["jobs"][0]["duration_s"] is None


async def test_a_dry_run_shows_durations_and_minutes_and_reserves_nothing(
    api: Api, fake: RefusingVod, database: Database
) -> None:
    fake.media.add("m1", 90.0)
    fake.media.add("m2", 1200.0)
    http = await api(
        daily_minutes={"AIVideoTag": 10},
        price_per_minute={"AIVideoTag": 0.05, "AIMediaDNA": 0.01},
        currency="USD",
    )
    assert (await post(http, "m1", "AIMediaDNA")).status_code == 201

    answer = await post(http, "m1", "AIVideoTag", "AIMediaDNA", dry_run=True)
    assert answer.status_code == 200
    dry = TypeAdapter(DryRun).validate_python(answer.json(), strict=True)
    assert dry == {
        "dry_run": True,
        "media_id": "m1",
        "region": "cn-shanghai",
        "duration_s": 90.0,
        "jobs": [
            {
                "type": "AIVideoTag",
                "action": "submit",
                "reason": None,
                "minutes": 1.5,
                "minutes_left": 10.0,
            },
            {
                "type": "AIMediaDNA",
                "action": "skip",
                "reason": "already processing",
                "minutes": 1.5,
                "minutes_left": None,
            },
        ],
        "minutes": 1.5,
        "estimated_cost": 0.075,
        "currency": "USD",
    }
    over = (await post(http, "m2", "AIVideoTag", dry_run=True)).json()
    assert over["jobs"][0]["action"] == "refuse"
    assert over["jobs"][0]["reason"] == "budget_exceeded (AIVideoTag)"
    assert over["minutes"] == 0.0
    assert fake.submit_calls == 1
    rows = await budget_rows(database)
    assert [row.type for row in rows.values()] == ["AIMediaDNA"]  # the dry runs left no trace
    bad = await post(http, "m1", "AIVideoTag", dry_run="yes")
    assert bad.status_code == 400


async def test_the_change_log_says_once_a_day_that_a_budget_ran_out(
    api: Api, fake: RefusingVod
) -> None:
    fake.faults.duration = TEN_MINUTES
    clock = FrozenClock(datetime(2026, 3, 4, 12, tzinfo=UTC))
    http = await api(clock, daily_minutes={"AIVideoTag": 25})
    assert (await post(http, "m1", "AIVideoTag")).status_code == 201
    assert (await post(http, "m2", "AIVideoTag")).status_code == 201
    for media in ("m3", "m4"):  # refused twice: told once
        assert (await post(http, media, "AIVideoTag")).status_code == 429
    clock.advance(timedelta(days=1))
    for media in ("m3", "m4", "m5"):  # the next day: two fit again, the third is refused
        await post(http, media, "AIVideoTag")

    feed = (await http.get("/changes", params={"type": "budget.exhausted"})).json()
    changes = TypeAdapter(list[Change]).validate_python(feed["items"])
    assert [change["data"] for change in changes] == [
        {
            "type": "AIVideoTag",
            "day": "2026-03-04",
            "minutes_limit": 25.0,
            "minutes_used": 20.0,
            "minutes_requested": 10.0,
            "resets_at": "2026-03-05T00:00:00Z",
        },
        {
            "type": "AIVideoTag",
            "day": "2026-03-05",
            "minutes_limit": 25.0,
            "minutes_used": 20.0,
            "minutes_requested": 10.0,
            "resets_at": "2026-03-06T00:00:00Z",
        },
    ]
    assert [change["timestamp"] for change in changes] == [
        "2026-03-04T12:00:00Z",
        "2026-03-05T12:00:00Z",
    ]
    stats = (await http.get("/stats")).json()["budget"]["AIVideoTag"]
    assert stats["exhausted_at"] == "2026-03-05T12:00:00Z"
    everything = (await http.get("/changes")).json()["items"]
    assert [c["type"] for c in everything].count("budget.exhausted") == 2
    submitted = [c for c in everything if c["type"] == "job.submitted"]
    assert {c["data"]["duration_s"] for c in submitted} == {TEN_MINUTES}  # the job as shown


async def test_a_budget_used_up_exactly_is_exhausted_and_metrics_show_it(
    api: Api, fake: RefusingVod
) -> None:
    fake.faults.duration = TEN_MINUTES
    http = await api(daily_minutes={"AIVideoTag": 20}, price_per_minute={"AIVideoTag": 0.5})
    for media in ("m1", "m2"):
        assert (await post(http, media, "AIVideoTag", "AIMediaDNA")).status_code == 201
    feed = (await http.get("/changes", params={"type": "budget.exhausted"})).json()["items"]
    assert [(c["data"]["minutes_used"], c["data"]["minutes_requested"]) for c in feed] == [
        (20.0, 10.0)
    ]
    budget = (await http.get("/stats")).json()["budget"]
    assert budget["AIVideoTag"]["minutes_left"] == 0.0
    assert budget["AIVideoTag"]["estimated_cost"] == 10.0
    assert "currency" not in budget["AIVideoTag"]
    assert budget["AIMediaDNA"]["minutes_limit"] is None
    assert (budget["AIMediaDNA"]["minutes_used"], budget["AIMediaDNA"]["jobs"]) == (20.0, 2)

    text = (await http.get("/metrics")).text
    assert 'tracker_budget_minutes_left{type="AIVideoTag"} 0.0' in text
    assert "tracker_budget_minutes_left{type=" + '"AIMediaDNA"' not in text  # no limit
    for job_type in ("AIVideoTag", "AIMediaDNA"):
        sample = f'tracker_video_minutes_submitted_total{{region="cn-shanghai",type="{job_type}"}}'
        assert sample in text


@asynccontextmanager
async def relaying(database_url: str, vod_url: str, **extra: Any) -> AsyncIterator[Any]:
    settings = vod_settings(
        database_url,
        vod_url,
        notify_allow_private="on",
        notify_retry_schedule=[timedelta(0)],
        notify_timeout=timedelta(seconds=2),
        **extra,
    )
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            yield http


async def test_a_webhook_subscriber_is_told_the_budget_ran_out(
    database_url: str, fake: RefusingVod
) -> None:
    fake.faults.duration = TEN_MINUTES
    receiver = Receiver()
    await receiver.start()
    try:
        async with relaying(database_url, fake.url, daily_minutes={"AIVideoTag": 5}) as http:
            created = await http.post(
                "/subscriptions", json={"url": receiver.url, "event_types": ["budget.exhausted"]}
            )
            assert created.status_code == 201, created.text
            receiver.secret = created.json()["secret"]
            assert (await post(http, "m1", "AIVideoTag")).status_code == 429
            await receiver.wait_for(1)
    finally:
        await receiver.stop()
    (delivery,) = receiver.received
    assert delivery.verified  # signed, verified by the official standardwebhooks library
    assert delivery.payload["type"] == "budget.exhausted"
    assert delivery.payload["data"]["minutes_limit"] == 5.0
    assert delivery.payload["data"]["minutes_requested"] == 10.0
    assert delivery.payload["data"]["day"] == datetime.now(UTC).date().isoformat()
