"""The status API: lookups, filters, keyset pages, stats, errors and auth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from starlette.applications import Starlette

from tests.factories import add_rows, new_event, new_heartbeat, new_job
from tracker.app import create_app
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.context import context_of
from tracker.db import Database
from tracker.models import Job, JobState

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_job(n: int, **fields: Any) -> Job:
    """Job n: two per media, types alternating; every third shares its time with the next, so
    ties are broken by id."""
    values: dict[str, Any] = {
        "media_id": f"media-{n // 2:04d}",
        "type": "AIVideoTag" if n % 2 == 0 else "AIMediaDNA",
        "region": "cn-shanghai",
        "submitted_at": T0 + timedelta(minutes=n - n % 3),
        "updated_at": T0 + timedelta(minutes=n),
        **fields,
    }
    return new_job(
        values.pop("job_id", f"job-{n:04d}"), values.pop("state", JobState.PROCESSING), **values
    )


add = add_rows


async def test_get_job_shape(client: httpx.AsyncClient, database: Database) -> None:
    await add(
        database,
        make_job(
            1,
            state=JobState.SUCCEEDED,
            status="success",
            result={"Tag": ["cat"]},
            completed_at=T0 + timedelta(hours=1),
        ),
    )
    response = await client.get("/jobs/job-0001")
    assert response.status_code == 200
    assert response.json() == {
        "job_id": "job-0001",
        "media_id": "media-0000",
        "type": "AIMediaDNA",
        "region": "cn-shanghai",
        "state": "succeeded",
        "stale": False,
        "stale_at": None,
        "origin": "submitted",
        "status": "success",
        "code": None,
        "message": None,
        "result": {"Tag": ["cat"]},
        "submitted_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:01:00Z",
        "completed_at": "2026-01-01T01:00:00Z",
    }


async def test_pending_confirmation_is_shown(client: httpx.AsyncClient, database: Database) -> None:
    await add(database, make_job(1, pending_status="success", pending_since=T0))
    body = (await client.get("/jobs/job-0001")).json()
    assert body["state"] == "processing"
    assert body["pending_status"] == "success"
    assert body["pending_since"] == "2026-01-01T00:00:00Z"


async def test_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/jobs/nope")
    assert response.status_code == 404
    assert response.json()["error"] == "job_not_found"
    assert (await client.get("/jobs/nope/events")).json()["error"] == "job_not_found"


def mixed_jobs(count: int) -> list[Job]:
    states = list(JobState)
    return [
        make_job(n, state=states[n % len(states)], stale=n % 5 == 0, job_id=f"job-{n:04d}")
        for n in range(count)
    ]


async def pages(client: httpx.AsyncClient, query: str, limit: int) -> list[list[dict[str, Any]]]:
    """Follow next_cursor to the end; bounded so a cursor bug cannot loop for ever."""
    result: list[list[dict[str, Any]]] = []
    cursor = None
    for _ in range(1000):
        url = f"/jobs?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = await client.get(url)
        assert response.status_code == 200, response.text
        body = response.json()
        result.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return result
    raise AssertionError("pagination did not end")


def expected_order(jobs: list[Job]) -> list[str]:
    # Insertion order equals id order here, so (submitted_at, id) desc is (submitted_at, n) desc.
    ranked = sorted(enumerate(jobs), key=lambda item: (item[1].submitted_at, item[0]), reverse=True)
    return [job.job_id or "" for _, job in ranked]


@pytest.mark.parametrize(
    ("query", "keep"),
    [
        ("x=", lambda j: True),
        ("state=processing", lambda j: j.state == "processing"),
        (
            "state=processing,submit_unknown,lost",
            lambda j: j.state in ("processing", "submit_unknown", "lost"),
        ),
        ("state=failed&state=succeeded", lambda j: j.state in ("failed", "succeeded")),
        ("type=AIMediaDNA", lambda j: j.type == "AIMediaDNA"),
        ("stale=true", lambda j: j.stale),
        ("stale=false&type=AIVideoTag", lambda j: not j.stale and j.type == "AIVideoTag"),
        ("media_id=media-0007", lambda j: j.media_id == "media-0007"),
        (
            "submitted_after=2026-01-01T00:20:00Z&submitted_before=2026-01-01T01:00:00%2B00:00",
            lambda j: T0 + timedelta(minutes=20) < j.submitted_at < T0 + timedelta(hours=1),
        ),
        (
            "state=processing,lost&stale=false&type=AIVideoTag",
            lambda j: j.state in ("processing", "lost") and not j.stale and j.type == "AIVideoTag",
        ),
    ],
)
@pytest.mark.parametrize("limit", [1, 7, 500])
async def test_filters_and_pages_without_gaps_or_repeats(
    client: httpx.AsyncClient, database: Database, query: str, keep: Any, limit: int
) -> None:
    jobs = mixed_jobs(90)
    await add(database, *jobs)
    query = "" if query == "x=" else query
    seen = await pages(client, query, limit)
    flat = [item["job_id"] for page in seen for item in page]
    expected = expected_order([job for job in jobs if keep(job)])
    assert expected  # each case selects something
    assert flat == expected
    assert all(len(page) == limit for page in seen[:-1])
    assert len(seen[-1]) <= limit


async def test_default_limit_is_50(client: httpx.AsyncClient, database: Database) -> None:
    await add(database, *mixed_jobs(60))
    body = (await client.get("/jobs")).json()
    assert len(body["items"]) == 50
    assert body["next_cursor"]


async def test_cursor_is_bound_to_its_filters(
    client: httpx.AsyncClient, database: Database
) -> None:
    await add(database, *mixed_jobs(30))
    first = (await client.get("/jobs?state=processing&limit=2")).json()
    cursor = first["next_cursor"]
    ok = await client.get(f"/jobs?state=processing&limit=3&cursor={cursor}")
    assert ok.status_code == 200
    other = await client.get(f"/jobs?state=failed&limit=2&cursor={cursor}")
    assert other.status_code == 400
    assert other.json()["error"] == "bad_request"
    assert "cursor" in other.json()["message"]


@pytest.mark.parametrize(
    ("query", "matches"),
    [
        ("submitted_before=0001-01-01T00:00:00%2B00:01", False),
        ("submitted_after=0001-01-01T00:00:00%2B00:01", True),
        ("submitted_after=9999-12-31T23:59:59-00:01", False),
        ("submitted_before=9999-12-31T23:59:59-00:01", True),
    ],
)
async def test_times_past_the_ends_of_the_calendar_are_accepted(
    client: httpx.AsyncClient, database: Database, query: str, matches: bool
) -> None:
    """Valid RFC 3339 times whose UTC falls outside years 1-9999 still filter, never 400."""
    await add(database, new_job("j-edge", JobState.PROCESSING, media_id="m-edge", at=T0))
    response = await client.get(f"/jobs?{query}")
    assert response.status_code == 200, response.text
    assert [j["job_id"] for j in response.json()["items"]] == (["j-edge"] if matches else [])


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("state=done", "state"),
        ("stale=maybe", "stale"),
        ("submitted_after=yesterday", "submitted_after"),
        ("submitted_before=2026-13-01", "submitted_before"),
        ("cursor=%%%", "cursor"),
        ("cursor=bm90IGpzb24", "cursor"),
        ("cursor=WzEsICIyMDI2LTAxLTAxIiwgMSwgIngiXQ", "cursor"),
        ("colour=red", "colour"),
        ("limit=1&limit=2", "limit"),
    ],
)
async def test_bad_parameters_are_400_naming_them(
    client: httpx.AsyncClient, query: str, parameter: str
) -> None:
    response = await client.get(f"/jobs?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "bad_request"
    assert body["parameter"] == parameter
    assert body["message"].startswith(parameter)


async def test_media_jobs(client: httpx.AsyncClient, database: Database) -> None:
    await add(database, *mixed_jobs(10))
    body = (await client.get("/media/media-0003/jobs")).json()
    assert [item["job_id"] for item in body["items"]] == ["job-0007", "job-0006"]
    assert (await client.get("/media/none/jobs")).json() == {"items": []}


async def test_job_events_say_why_not_applied(
    client: httpx.AsyncClient, database: Database
) -> None:
    await add(
        database,
        make_job(1),
        *(
            new_event(
                "job-0001",
                "success",
                T0 + timedelta(seconds=n),
                event_type="AIMediaDNAComplete",
                media_id="media-0000",
                deliveries=1 + n,
                applied=applied,
                reason=reason,
            )
            for n, (applied, reason) in enumerate([(True, None), (False, "already_final")])
        ),
    )
    items = (await client.get("/jobs/job-0001/events")).json()["items"]
    assert [(i["applied"], i["reason"], i["deliveries"]) for i in items] == [
        (True, None, 1),
        (False, "already_final", 2),
    ]
    await add(database, make_job(2))
    assert (await client.get("/jobs/job-0002/events")).json() == {"items": []}


async def test_stats_counts_and_cache(
    app: Starlette, client: httpx.AsyncClient, database: Database, clock: FrozenClock
) -> None:
    now = clock()
    await add(
        database,
        make_job(1, state=JobState.PROCESSING, submitted_at=now - timedelta(hours=2)),
        make_job(2, state=JobState.PROCESSING, stale=True, submitted_at=now - timedelta(hours=3)),
        make_job(3, state=JobState.SUCCEEDED, submitted_at=now - timedelta(hours=9)),
        make_job(4, state=JobState.SUBMIT_UNKNOWN, submitted_at=now - timedelta(hours=1)),
    )
    await add(
        database,
        new_heartbeat("sweep", owner="me", at=now, ok=True),
        *(
            new_event("job-0001", "success", now - age, deliveries=3)
            for age in (timedelta(minutes=5), timedelta(hours=2))
        ),
    )
    body = (await client.get("/stats")).json()
    assert body["jobs"]["by_type"] == {
        "AIMediaDNA": {"processing": 1, "succeeded": 1},
        "AIVideoTag": {"processing": 1, "submit_unknown": 1},
    }
    assert body["jobs"]["by_state"] == {"processing": 2, "succeeded": 1, "submit_unknown": 1}
    assert body["jobs"]["total"] == 4
    assert body["jobs"]["stale"] == 1
    assert body["jobs"]["oldest_unfinished_age_s"] == 3 * 3600
    assert body["callbacks_last_hour"]["received"] == 1
    assert body["callbacks_last_hour"]["duplicate"] == 2
    assert [beat["name"] for beat in body["heartbeats"]] == ["sweep"]

    await add(database, make_job(5, state=JobState.FAILED))
    clock.advance(timedelta(seconds=1))
    cached = (await client.get("/stats")).json()
    assert cached["jobs"]["total"] == 4  # served from the cache
    assert cached["jobs"]["oldest_unfinished_age_s"] == 3 * 3600 + 1  # the age still moves

    # Past the ttl: the old figures at once, a refresh behind them.
    clock.advance(timedelta(seconds=10))
    assert (await client.get("/stats")).json()["jobs"]["total"] == 4
    cache = context_of(app).stats
    assert cache.refreshing is not None
    await cache.refreshing
    assert (await client.get("/stats")).json()["jobs"]["total"] == 5

    # Past max_age (nobody asked for a while): the request waits for fresh figures.
    await add(database, make_job(6, state=JobState.FAILED))
    clock.advance(timedelta(minutes=5))
    assert (await client.get("/stats")).json()["jobs"]["total"] == 6


async def test_errors_are_json_for_any_path_and_method(client: httpx.AsyncClient) -> None:
    missing = await client.get("/no/such/path")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    wrong = await client.delete("/jobs/x")
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "method_not_allowed"
    assert "GET" in wrong.headers["allow"]


@pytest.fixture
async def secured(database_url: str, clock: FrozenClock) -> Any:
    settings = Settings(database_url=database_url, scheduler="off", api_tokens="s3cret,other")  # type: ignore[arg-type]
    app = create_app(settings, clock=clock)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            yield http


@pytest.mark.parametrize("path", ["/jobs", "/jobs/x", "/jobs/x/events", "/media/m/jobs", "/stats"])
async def test_tokens_are_required_when_set(secured: httpx.AsyncClient, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        response = await secured.get(path, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    for token in ("s3cret", "other"):
        ok = await secured.get(path, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code in (200, 404)


async def test_auth_off_opens_the_api(database_url: str) -> None:
    settings = Settings(database_url=database_url, scheduler="off", api_tokens="t", api_auth="off")  # type: ignore[arg-type]
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
            assert (await http.get("/jobs")).status_code == 200


MILLION = 1_000_000


@pytest.mark.slow
async def test_a_million_jobs(client: httpx.AsyncClient, database: Database) -> None:
    from sqlalchemy import func, select

    from benchmarks import synthetic

    await synthetic.generate_jobs(database, MILLION)
    async with database.session() as session:
        # Ids follow n, so (submitted_at, id) order is (submitted_at, n) order below.
        suffix = func.substr(Job.job_id, 5)
        mismatched = select(func.count()).where(Job.id != func.cast(suffix, Job.id.type))
        assert await session.scalar(mismatched) == 0

    one = synthetic.job(777_777)
    body = (await client.get("/jobs/job-777777")).json()
    assert (body["media_id"], body["type"], body["state"], body["stale"]) == (
        one.media_id,
        one.type,
        one.state,
        one.stale,
    )
    assert (await client.get(f"/jobs/job-{MILLION + 1}")).status_code == 404
    media = (await client.get("/media/media-1234/jobs")).json()["items"]
    assert [item["job_id"] for item in media] == ["job-2469", "job-2468"]

    stats = (await client.get("/stats")).json()["jobs"]
    expected = synthetic.expected_counts(MILLION)
    assert stats["by_type"] == {
        t: {s: c for (t2, s), c in expected.items() if t2 == t} for t in synthetic.TYPES
    }
    assert stats["total"] == MILLION
    all_jobs = [synthetic.job(n) for n in range(1, MILLION + 1)]
    assert stats["stale"] == sum(j.stale for j in all_jobs)

    def order(jobs: list[synthetic.SyntheticJob]) -> list[str]:
        return [j.job_id for j in sorted(jobs, key=lambda j: (j.submitted_at, j.n), reverse=True)]

    page = (await client.get("/")).text
    assert f'<td class="n" id="count-total">{MILLION}</td>' in page
    lost = sum(c for (_, s), c in expected.items() if s == "lost")
    assert f'<td class="n" id="count-lost">{lost}</td>' in page

    first = (await client.get("/jobs?limit=5")).json()["items"]
    assert [item["job_id"] for item in first] == order(all_jobs[-5:])

    after, before = synthetic.BASE + timedelta(days=1), synthetic.BASE + timedelta(days=2)
    query = (
        "state=processing,lost&type=AIMediaDNA"
        f"&submitted_after={iso_z(after)}&submitted_before={iso_z(before)}"
    )
    wanted = [
        j
        for j in all_jobs
        if j.state in ("processing", "lost")
        and j.type == "AIMediaDNA"
        and after < j.submitted_at < before
    ]
    seen = await pages(client, query, 500)
    assert len(seen) > 10
    assert [item["job_id"] for page in seen for item in page] == order(wanted)


def iso_z(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("path", ["/jobs", "/jobs/x", "/jobs/x/events", "/media/m/jobs", "/stats"])
async def test_unreachable_database_is_503(path: str) -> None:
    # Nothing listens on port 1. (A failed aiosqlite connect leaves a worker thread that
    # outlives the test's event loop, so SQLite's variant is not exercised here.)
    url = "postgresql+asyncpg://nobody@127.0.0.1:1/none"
    app = create_app(Settings(database_url=url, scheduler="off"))  # type: ignore[call-arg]
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            response = await http.get(path)
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"


# --- issue 13 ---------------------------------------------------------------------------------


async def test_a_stored_result_holding_nan_or_infinity_never_fails_the_api(
    client: httpx.AsyncClient, database: Database
) -> None:
    """The receiver refuses them now; rows stored before (or by another path) must still read.
    PostgreSQL's jsonb holds 1e999 (as 1,000 digits) but no NaN; SQLite keeps any as text."""
    await add(database, make_job(1, state=JobState.SUCCEEDED))
    stored = '{"big": [1e5000, -1e5000], "ok": 1.5}'
    if not database.is_sqlite:
        stored_as = "CAST(:result AS jsonb)"
    else:
        stored = '{"big": [1e5000, -1e999], "ok": 1.5, "nan": NaN, "inf": -Infinity}'
        stored_as = ":result"
    async with database.write() as session:
        await session.execute(
            text(f"UPDATE jobs SET result = {stored_as} WHERE job_id = 'job-0001'"),
            {"result": stored},
        )
    for path in ("/jobs/job-0001", "/media/media-0000/jobs", "/jobs", "/jobs?state=succeeded"):
        response = await client.get(path)
        assert response.status_code == 200, path
    result = (await client.get("/jobs/job-0001")).json()["result"]
    assert result["big"] == [None, None]
    assert result["ok"] == 1.5
    assert result.get("nan") is None
    assert result.get("inf") is None


async def test_ids_holding_a_slash_are_reachable(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A JobId VOD answered, or a MediaId `POST /jobs` accepts, may hold `/`; clients send it
    as is or as %2F, which the server decodes before routing."""
    await add(
        database,
        make_job(1, job_id="a/b", media_id="m/1"),
        make_job(2, job_id="x"),
        new_event("a/b", "success", T0, applied=False, reason="test"),
    )
    for path in ("/jobs/a/b", "/jobs/a%2Fb"):
        response = await client.get(path)
        assert (response.status_code, response.json()["job_id"]) == (200, "a/b"), path
    for path in ("/jobs/a/b/events", "/jobs/a%2Fb/events"):
        items = (await client.get(path)).json()["items"]
        assert [e["job_id"] for e in items] == ["a/b"], path
    for path in ("/media/m/1/jobs", "/media/m%2F1/jobs"):
        items = (await client.get(path)).json()["items"]
        assert [j["job_id"] for j in items] == ["a/b"], path
    await add(database, make_job(3, job_id="n\nl", media_id="n\nl"))
    assert (await client.get("/jobs/n%0Al")).json()["job_id"] == "n\nl"
    assert [j["job_id"] for j in (await client.get("/media/n%0Al/jobs")).json()["items"]] == [
        "n\nl"
    ]
    assert (await client.get("/jobs/x")).json()["job_id"] == "x"
    assert (await client.get("/jobs/x/events")).json() == {"items": []}
    missing = await client.get("/jobs/a/c")
    assert (missing.status_code, missing.json()["error"]) == (404, "job_not_found")
