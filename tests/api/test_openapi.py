"""schemathesis over /openapi.json against a real server: no 500s, no schema violations."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import TypeAdapter
from schemathesis.core.parameters import ParameterLocation
from starlette.routing import Route

from tests.factories import add_rows, new_event, new_heartbeat, new_job
from tracker.api import schemas
from tracker.api.openapi import document
from tracker.app import create_app
from tracker.config import Settings
from tracker.models import JobState

TOKEN = "s3cret-token"
# POST /jobs needs a VOD to answer 2xx; tests/submit/test_post_jobs.py fuzzes it against the
# simulator.
SCHEMA = (
    schemathesis.openapi.from_dict(document())
    .exclude(path="/jobs", method="POST")
    # Creating or changing a subscription resolves its URL's host name: fuzzing would send DNS
    # queries off this machine. tests/notify/ covers them (bad bodies: 400, private: refused).
    .exclude(path="/subscriptions", method="POST")
    .exclude(path="/subscriptions/{sub_id}", method="PATCH")
    # A stream stays open for minutes by design; tests/notify/test_pull.py reads it.
    .exclude(path="/changes/stream")
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def live(fresh_database_url: str, live_server: Any) -> Iterator[str]:
    # A job in every state (every other one stale, a processing one awaiting confirmation), a
    # callback of each that was not applied, and a heartbeat.
    rows: list[Any] = [new_heartbeat("sweep", at=T0)]
    for n, state in enumerate(JobState):
        pending = state == JobState.PROCESSING
        rows.append(
            new_job(
                f"j{n}",
                state,
                media_id=f"m{n}",  # one live submitted job per media and type (models/jobs.py)
                stale=n % 2 == 0,
                stale_at=T0 if n % 2 == 0 else None,
                result={"k": [n]},
                pending_status="success" if pending else None,
                pending_since=T0 if pending else None,
                submitted_at=T0 + timedelta(minutes=n),
                updated_at=T0,
            )
        )
        rows.append(new_event(f"j{n}", None, T0, applied=False, reason="older_than_current"))
    asyncio.run(add_rows(fresh_database_url, *rows))
    settings_ = Settings(database_url=fresh_database_url, scheduler="off", api_tokens=TOKEN)  # type: ignore[arg-type]
    with live_server(create_app(settings_)) as url:
        yield url


@SCHEMA.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case, live: str) -> None:
    negative = case.meta is not None and case.meta.generation.mode.is_negative
    if case.query and "cursor" in case.query and not negative:
        # A cursor is opaque: only one this API issued is valid, so a made-up one is
        # rightly a 400 (tests/api/test_routes.py covers real ones).
        del case.query["cursor"]
    if case.query and "wait" in case.query and not negative:
        # A long-poll holds its answer up to a minute; tests/notify/test_pull.py covers it.
        del case.query["wait"]
    case.call_and_validate(base_url=live, headers=auth_headers(case))


def auth_headers(case: schemathesis.Case) -> dict[str, str]:
    """The API token, unless the case's headers are what it negates: schemathesis takes the
    bearer scheme for a required header and may drop it (issue 23, F2). It strips the caller's
    header for such a case itself, except when the case negates the query too: a random run
    found `GET /changes` with Authorization dropped and a query key of an empty name (no URL
    carries it, so `?after=0` on the wire); the token added back made it valid, the server
    rightly answered 200, and schemathesis judged "schema-violating request accepted" (ST201).
    Sent as generated, such a case must be refused (401)."""
    if case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER):
        return {}
    return {"Authorization": f"Bearer {TOKEN}"}


def test_served_document_is_the_checked_one(live: str) -> None:
    assert httpx.get(f"{live}/openapi.json").json() == document()


def test_every_route_is_documented_with_its_methods(fresh_database_url: str) -> None:
    app = create_app(Settings(database_url=fresh_database_url, scheduler="off"))
    served = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route) and route.path != "/openapi.json"
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {(path, method) for path, ops in document()["paths"].items() for method in ops}
    assert served == documented


def test_every_body_is_a_generated_shape() -> None:
    """No JSON Schema is written by hand: the components are the shapes' generated schemas, and
    every JSON body of every operation refers to one of them."""
    doc = document()
    assert doc["components"]["schemas"] == schemas.components()
    assert set(schemas.SHAPES) <= set(doc["components"]["schemas"])
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            bodies = [operation.get("requestBody", {}), *operation["responses"].values()]
            for body in bodies:
                json_body = body.get("content", {}).get("application/json")
                if json_body is not None:
                    assert set(json_body["schema"]) == {"$ref"}, (path, method)


def test_readme_job_example_has_the_declared_shape() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("A job looks like this", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    job = TypeAdapter(schemas.Job).validate_python(json.loads(example), strict=True)
    assert set(job) == set(document()["components"]["schemas"]["Job"]["required"])
