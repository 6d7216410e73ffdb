"""GET /metrics: request metrics by route template, job gauges from the stats cache, and auth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import add_rows, add_subscription, new_heartbeat, new_job
from tracker.app import create_app
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.db import Database
from tracker.models import JobState


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


async def test_requests_counted_by_route_template(client: httpx.AsyncClient) -> None:
    before = (await client.get("/metrics")).text
    for job_id in ("a", "b", "c"):
        assert (await client.get(f"/jobs/{job_id}")).status_code == 404
    await client.get("/definitely/not/a/route")
    after = (await client.get("/metrics")).text
    labels = {"route": "/jobs/{job_id}", "method": "GET", "status": "404"}
    name = "tracker_http_requests_total"
    assert value(after, name, **labels) - value(before, name, **labels) == 3
    unmatched = {"route": "<unmatched>", "method": "GET", "status": "404"}
    assert value(after, name, **unmatched) - value(before, name, **unmatched) == 1
    routes = {dict(labels).get("route") for _, labels in samples(after)}
    assert "/jobs/a" not in routes
    count = "tracker_http_request_seconds_count"
    assert (
        value(after, count, route="/jobs/{job_id}") - value(before, count, route="/jobs/{job_id}")
        == 3
    )


async def test_job_gauges(client: httpx.AsyncClient, database: Database) -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    states = [JobState.PROCESSING, JobState.PROCESSING, JobState.FAILED]
    # Each on its own media: one live submitted job per media and type (models/jobs.py).
    jobs = [
        new_job(f"j{n}", s, type="AIMediaDNA", stale=n == 0, at=now) for n, s in enumerate(states)
    ]
    await add_rows(database, *jobs)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert value(text, "tracker_jobs", type="AIMediaDNA", state="processing") == 2
    assert value(text, "tracker_jobs", type="AIMediaDNA", state="failed") == 1
    assert value(text, "tracker_stale_jobs") == 1
    # The fixture clock stands at 2026-01-02T03:04:05Z.
    assert value(text, "tracker_oldest_unfinished_job_seconds") == 3 * 3600 + 4 * 60 + 5


async def metrics_status(settings: Settings, headers: dict[str, str]) -> int:
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return (await http.get("/metrics", headers=headers)).status_code


@pytest.mark.parametrize(
    ("env", "headers", "status"),
    [
        # On loopback, open even with tokens set.
        ({"api_tokens": "api"}, {}, 200),
        # Beyond loopback: an API token or the metrics token.
        ({"host": "0.0.0.0", "api_tokens": "api"}, {}, 401),
        ({"host": "0.0.0.0", "api_tokens": "api"}, {"Authorization": "Bearer api"}, 200),
        ({"host": "0.0.0.0", "api_tokens": "api"}, {"Authorization": "Bearer nope"}, 401),
        (
            {"host": "0.0.0.0", "api_tokens": "api", "metrics_token": "m"},
            {"Authorization": "Bearer m"},
            200,
        ),
        ({"host": "0.0.0.0", "api_auth": "off", "metrics_token": "m"}, {}, 401),
        (
            {"host": "0.0.0.0", "api_auth": "off", "metrics_token": "m"},
            {"Authorization": "Bearer m"},
            200,
        ),
        # API opened on purpose and no metrics token: metrics open too.
        ({"host": "0.0.0.0", "api_auth": "off"}, {}, 200),
    ],
)
async def test_metrics_auth(
    database_url: str, env: dict[str, str], headers: dict[str, str], status: int
) -> None:
    settings = Settings(database_url=database_url, scheduler="off", **env)  # type: ignore[arg-type]
    assert await metrics_status(settings, headers) == status


async def test_callbacks_are_counted_like_any_route(client: httpx.AsyncClient) -> None:
    """POST /callbacks/vod is answered ahead of the middleware stack (callbacks.py), yet counts
    in the same series; other methods on the path still get a JSON 405."""
    before = (await client.get("/metrics")).text
    assert (await client.post("/callbacks/vod", content=b"not json")).status_code == 400
    wrong = await client.get("/callbacks/vod")
    assert (wrong.status_code, wrong.json()["error"]) == (405, "method_not_allowed")
    after = (await client.get("/metrics")).text
    name = "tracker_http_requests_total"
    for method, status in (("POST", "400"), ("GET", "405")):
        labels = {"route": "/callbacks/vod", "method": method, "status": status}
        assert value(after, name, **labels) - value(before, name, **labels) == 1
    count = "tracker_http_request_seconds_count"
    route = {"route": "/callbacks/vod"}
    assert value(after, count, **route) - value(before, count, **route) == 2


async def test_delivery_backlog_and_scheduler_states_come_from_the_database(
    client: httpx.AsyncClient, database: Database, clock: FrozenClock
) -> None:
    """Whichever process runs the relay and the scheduler, any replica's /metrics says how the
    deliveries and the scheduled jobs stand (as GET /stats and /readyz do)."""
    statuses = ["pending", "pending", "sending", "succeeded", "failed"]
    await add_subscription(database, at=clock(), deliveries=statuses)
    await add_subscription(
        database, at=clock(), enabled=False, disabled_at=clock(), deliveries=["failed", "skipped"]
    )
    now = clock()
    beat = {"owner": "elsewhere", "at": now - timedelta(seconds=1), "finished_at": now}
    await add_rows(
        database,
        new_heartbeat("sweep", duration_s=1.0, ok=True, summary="flagged 0", **beat),
        new_heartbeat("retention", duration_s=1.0, ok=False, summary="failed: disk", **beat),
    )
    text = (await client.get("/metrics")).text
    assert value(text, "tracker_deliveries_pending") == 3  # pending and sending
    assert value(text, "tracker_deliveries_failed") == 2
    assert value(text, "tracker_subscriptions_disabled") == 1
    state = "tracker_scheduler_job_state"
    assert value(text, state, job="sweep", state="ok") == 1
    assert value(text, state, job="sweep", state="late") == 0
    assert value(text, state, job="retention", state="failing") == 1
    assert value(text, state, job="reconcile", state="off") == 1  # no VOD credentials
    # Ten minutes without a sweep (every minute): late, as /readyz says.
    clock.advance(timedelta(minutes=10))
    text = (await client.get("/metrics")).text
    assert value(text, state, job="sweep", state="ok") == 0
    assert value(text, state, job="sweep", state="late") == 1
    ready = (await client.get("/readyz")).json()
    assert ready["scheduler"]["jobs"]["sweep"]["state"] == "late"
