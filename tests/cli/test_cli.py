"""`tracker db upgrade` and `tracker serve` as an operator runs them: real processes, real ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import POSTGRES_URL, reset_postgres
from tests.processes import TrackerProcess, run_tracker
from tracker.db import upgrade


@pytest.fixture
def fresh_url(tmp_path: Path) -> Iterator[str]:
    """An empty database (no schema) of the kind under test."""
    if POSTGRES_URL:
        reset_postgres(POSTGRES_URL)
        yield POSTGRES_URL
        reset_postgres(POSTGRES_URL)
        upgrade(POSTGRES_URL)  # leave the schema the other tests expect
    else:
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"


def test_upgrade_then_serve_answers_health_and_readiness(fresh_url: str) -> None:
    env = {"TRACKER_DATABASE_URL": fresh_url}
    result = run_tracker("db", "upgrade", env=env)
    assert result.returncode == 0, result.stderr
    server = TrackerProcess("serve", env=env)
    try:
        assert server.wait_ready().status_code == 200
        ready = httpx.get(f"{server.url}/readyz", timeout=5)
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        missing = httpx.get(f"{server.url}/no/such/path", timeout=5)
        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"
    finally:
        server.stop()


def test_serve_on_an_empty_database_upgrades_sqlite_but_refuses_postgres(fresh_url: str) -> None:
    """The embedded default just works; a shared PostgreSQL is migrated by an operator."""
    if POSTGRES_URL:
        result = run_tracker("serve", env={"TRACKER_DATABASE_URL": fresh_url})
        assert result.returncode != 0
        assert "tracker db upgrade" in result.stderr
        assert "Traceback" not in result.stderr
        return
    server = TrackerProcess("serve", env={"TRACKER_DATABASE_URL": fresh_url})
    try:
        assert server.wait_ready("/readyz").status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TRACKER_STALE_AFTER": "soon"}, "TRACKER_STALE_AFTER"),
        ({"TRACKER_HOST": "0.0.0.0", "TRACKER_API_TOKENS": "t"}, "TRACKER_CALLBACK_AUTH_KEY"),
        (
            {
                "TRACKER_HOST": "0.0.0.0",
                "TRACKER_CALLBACK_AUTH_KEY": "K1abcdef",
                "TRACKER_CALLBACK_URL": "https://tracker.example.com/callbacks/vod",
            },
            "TRACKER_API_TOKENS",
        ),
        ({"TRACKER_CALLBACK_AUTH_KEY": "K1abcdef"}, "TRACKER_CALLBACK_URL"),
    ],
)
def test_bad_configuration_stops_serve_with_one_line(env: dict[str, str], named: str) -> None:
    result = run_tracker("serve", env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "Traceback" not in result.stderr
