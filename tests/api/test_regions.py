"""Regions end to end: two simulators serve cn-shanghai and cn-beijing; each job goes to, and is
reconciled with, its own region's VOD."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from tests.factories import add_job, find_job
from tracker.app import create_app
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.context import context_of
from tracker.db import Database
from tracker.fakevod import FakeVod, Faults
from tracker.models import JobState, Origin
from tracker.scheduler.service import Scheduler

KEY_ID, KEY_SECRET = "region-key", "region-secret"


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeVod]]:
    made = {
        region: FakeVod(
            access_key_id=KEY_ID,
            access_key_secret=KEY_SECRET,
            seed=seed,
            faults=Faults(delay=0.05, drop_rate=1.0),  # only reconciliation learns the outcomes
        )
        for seed, region in enumerate(("cn-shanghai", "cn-beijing"))
    }
    for fake in made.values():
        await fake.start()
    yield made
    for fake in made.values():
        await fake.stop()


@pytest.fixture
def region_settings(database_url: str, fakes: dict[str, FakeVod]) -> Settings:
    return Settings(
        database_url=database_url,
        scheduler="off",
        access_key_id=KEY_ID,
        access_key_secret=SecretStr(KEY_SECRET),
        vod_region="cn-shanghai",
        vod_endpoints={region: fake.url for region, fake in fakes.items()},
        reconcile_grace=timedelta(minutes=10),
    )


@pytest.fixture
async def region_app(
    region_settings: Settings, clock: FrozenClock
) -> AsyncIterator[tuple[httpx.AsyncClient, Scheduler]]:
    app = create_app(region_settings, clock=clock)
    async with LifespanManager(app):
        context = context_of(app)
        scheduler = Scheduler(region_settings, context.database, vod=context.vod, clock=clock)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            yield http, scheduler


async def test_jobs_go_to_their_region_and_are_reconciled_there(
    region_app: tuple[httpx.AsyncClient, Scheduler],
    fakes: dict[str, FakeVod],
    database: Database,
    clock: FrozenClock,
) -> None:
    http, scheduler = region_app
    beijing = await http.post(
        "/jobs",
        json={"media_id": "bj1", "types": ["AIVideoTag", "AIMediaDNA"], "region": "cn-beijing"},
    )
    assert beijing.status_code == 201, beijing.text
    assert {job["region"] for job in beijing.json()["jobs"]} == {"cn-beijing"}
    default = await http.post("/jobs", json={"media_id": "sh1", "types": "AIVideoTag"})
    assert default.status_code == 201, default.text
    assert [job["region"] for job in default.json()["jobs"]] == ["cn-shanghai"]
    assert fakes["cn-beijing"].submit_calls == 1
    assert fakes["cn-shanghai"].submit_calls == 1
    assert {j.media_id for j in fakes["cn-beijing"].jobs.values()} == {"bj1"}
    assert {j.media_id for j in fakes["cn-shanghai"].jobs.values()} == {"sh1"}

    listed = await http.get("/jobs", params={"region": "cn-beijing"})
    assert listed.status_code == 200
    assert sorted(job["media_id"] for job in listed.json()["items"]) == ["bj1", "bj1"]
    both = await http.get("/jobs", params={"region": "cn-beijing,cn-shanghai"})
    assert len(both.json()["items"]) == 3

    for fake in fakes.values():
        await fake.idle(10)
    before = {region: fake.requests for region, fake in fakes.items()}
    clock.advance(timedelta(minutes=11))
    await scheduler.reconcile()
    # Each VOD was asked once (ListAIJob) about its own jobs only, and knew all of them.
    assert {region: fake.requests - before[region] for region, fake in fakes.items()} == {
        "cn-shanghai": 1,
        "cn-beijing": 1,
    }
    for fake in fakes.values():
        assert fake.refused == {}
        for job_id, fake_job in fake.jobs.items():
            job = await find_job(database, job_id)
            assert job.state == JobState.SUCCEEDED
            assert fake_job.status == "success"


async def test_a_job_learned_from_a_callback_is_looked_up_in_the_default_region(
    region_app: tuple[httpx.AsyncClient, Scheduler],
    fakes: dict[str, FakeVod],
    database: Database,
    clock: FrozenClock,
) -> None:
    _, scheduler = region_app
    unsolicited = fakes["cn-shanghai"].emit_unsolicited("m9")
    await fakes["cn-shanghai"].idle(10)
    await add_job(
        database,
        unsolicited.job_id,
        at=clock() - timedelta(hours=1),
        media_id="m9",
        type="AIMediaDNA",
        origin=Origin.CALLBACK,
        region=None,
    )
    await scheduler.reconcile()
    job = await find_job(database, unsolicited.job_id)
    assert job.state == JobState.SUCCEEDED
    assert job.region == "cn-shanghai"  # found there, so it is a cn-shanghai job now


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            {"media_id": "m1", "types": "AIVideoTag", "region": "ap-southeast-1"},
            "type_not_in_region",
        ),
        ({"media_id": "m1", "types": "AIMediaDNA", "region": "mars"}, "invalid_submission"),
        ({"media_id": "m1", "types": "AIMediaDNA", "region": 42}, "invalid_submission"),
        ({"media_id": "m1", "types": "AIMediaDNA", "region": "eu-central-1"}, "type_not_in_region"),
    ],
)
async def test_the_feature_check_is_per_job(
    region_app: tuple[httpx.AsyncClient, Scheduler],
    fakes: dict[str, FakeVod],
    body: dict[str, object],
    error: str,
) -> None:
    http, _ = region_app
    response = await http.post("/jobs", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert all(fake.requests == 0 for fake in fakes.values())
    assert (await http.get("/jobs")).json()["items"] == []


async def test_fingerprinting_in_singapore_is_accepted(
    region_settings: Settings, fakes: dict[str, FakeVod], clock: FrozenClock
) -> None:
    singapore = fakes["cn-beijing"]  # a third region served by the second simulator
    settings = region_settings.model_copy(
        update={"vod_endpoints": {**region_settings.vod_endpoints, "ap-southeast-1": singapore.url}}
    )
    app = create_app(settings, clock=clock)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            response = await http.post(
                "/jobs", json={"media_id": "sg1", "types": "AIMediaDNA", "region": "ap-southeast-1"}
            )
            assert response.status_code == 201, response.text
            assert response.json()["jobs"][0]["region"] == "ap-southeast-1"
            listed = await http.get("/jobs", params={"region": "ap-southeast-1"})
            assert [job["media_id"] for job in listed.json()["items"]] == ["sg1"]
