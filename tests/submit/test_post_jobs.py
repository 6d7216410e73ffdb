"""POST /jobs against the VOD simulator: the jobs it returns, its errors, and any body fuzzed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tests.submit.simulator import BOTH, RefusingVod, vod_settings
from tracker.app import create_app
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.fakevod import FakeVod

JSON_TYPE = {"Content-Type": "application/json"}


@pytest.fixture
async def api(
    database_url: str, fake: FakeVod, clock: FrozenClock
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        vod_settings(database_url, fake.url, api_tokens="t0ken", vod_retries=1), clock=clock
    )
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": "Bearer t0ken"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=headers
        ) as http:
            yield http


async def test_post_jobs_returns_the_jobs(api: httpx.AsyncClient, fake: FakeVod) -> None:
    body = {"media_id": "m1", "types": list(BOTH), "user_data": {"Extend": {"k": "v"}}}
    response = await api.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    jobs = response.json()["jobs"]
    assert sorted(j["type"] for j in jobs) == sorted(BOTH)
    assert all(j["state"] == "processing" and j["job_id"] in fake.jobs for j in jobs)
    assert all(fake.jobs[j["job_id"]].extend == '{"k":"v"}' for j in jobs)

    again = await api.post("/jobs", json=body)
    assert again.status_code == 200
    assert [j["job_id"] for j in again.json()["jobs"]] == [j["job_id"] for j in jobs]
    assert fake.submit_calls == 1


async def test_post_jobs_errors(api: httpx.AsyncClient, fake: RefusingVod) -> None:
    unknown = await api.post("/jobs", json={"media_id": "m1", "types": ["Nope"]})
    assert unknown.status_code == 400
    assert unknown.json()["valid_types"] == list(BOTH)
    assert (await api.post("/jobs", content=b"[", headers=JSON_TYPE)).status_code == 400
    assert (await api.post("/jobs", json=["m1"])).status_code == 400
    anonymous = await api.post("/jobs", json={"media_id": "m1"}, headers={"Authorization": ""})
    assert anonymous.status_code == 401

    fake.refuse = {"m2"}
    refused = await api.post("/jobs", json={"media_id": "m2", "types": ["AIMediaDNA"]})
    assert refused.status_code == 502
    body = refused.json()
    assert body["Code"] == "Forbidden.RAM"
    assert body["RequestId"]
    assert body["jobs"][0]["state"] == "submit_failed"

    fake.refuse = set()
    fake.throttle_every = 1  # every call throttled, through the client's retries
    throttled = await api.post("/jobs", json={"media_id": "m4", "types": ["AIMediaDNA"]})
    assert throttled.status_code == 429
    assert throttled.json()["Code"].startswith("Throttling")
    assert fake.submit_calls == 0


async def test_a_per_request_callback_is_passed_through(
    api: httpx.AsyncClient, fake: FakeVod
) -> None:
    callback = {"CallbackURL": "https://example.com/hook", "CallbackType": "http"}
    body = {"media_id": "m1", "types": ["AIMediaDNA"], "user_data": {"MessageCallback": callback}}
    response = await api.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    (job,) = response.json()["jobs"]
    assert fake.jobs[job["job_id"]].callback_url == "https://example.com/hook"


async def test_post_jobs_when_the_database_fails_sends_nothing(
    api: httpx.AsyncClient, database: Database, fake: FakeVod
) -> None:
    async with database.write() as session:  # the claim's INSERT now fails
        await session.execute(text("ALTER TABLE submissions RENAME TO submissions_away"))
    try:
        response = await api.post("/jobs", json={"media_id": "m1", "types": ["AIVideoTag"]})
    finally:
        async with database.write() as session:
            await session.execute(text("ALTER TABLE submissions_away RENAME TO submissions"))
    assert response.status_code == 503
    assert response.json()["error"] == "database_unavailable"
    assert fake.submit_calls == 0


async def test_post_jobs_without_vod_credentials_is_503(client: httpx.AsyncClient) -> None:
    response = await client.post("/jobs", json={"media_id": "m1", "types": ["AIVideoTag"]})
    assert response.status_code == 503
    assert response.json()["error"] == "vod_not_configured"


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)
BODIES = (
    st.fixed_dictionaries(
        {},
        optional={
            "media_id": st.one_of(
                st.sampled_from(["m1", "m2", " m3 "]), st.text(max_size=140), JSON_VALUES
            ),
            "types": st.one_of(
                st.lists(st.sampled_from([*BOTH, "AIVideoCover", ""]), max_size=3),
                st.sampled_from(["AIVideoTag", "AIVideoTag,AIMediaDNA", "x", ""]),
                JSON_VALUES,
            ),
            "config": JSON_VALUES,
            "user_data": st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "Extend": st.one_of(st.text(max_size=300), JSON_VALUES),
                        "MessageCallback": st.one_of(
                            st.fixed_dictionaries({"CallbackURL": st.text(max_size=20)}),
                            JSON_VALUES,
                        ),
                    },
                ),
                JSON_VALUES,
            ),
            "force": JSON_VALUES,
        },
    )
    | JSON_VALUES
)


@given(body=BODIES)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_post_jobs_never_fails_on_any_body(api: httpx.AsyncClient, body: Any) -> None:
    # json=None sends no body at all, hence no JSON Content-Type: a 415.
    content = json.dumps(body).encode() if body is not None else b"null"
    response = await api.post("/jobs", content=content, headers=JSON_TYPE)
    event(f"HTTP {response.status_code}")
    assert response.status_code in (200, 201, 400), response.text
    answer = response.json()
    if response.status_code == 400:
        assert answer["error"] in ("bad_request", "invalid_submission")
        assert answer["message"]
    else:
        assert answer["jobs"]
        assert all(job["state"] == "processing" for job in answer["jobs"])
