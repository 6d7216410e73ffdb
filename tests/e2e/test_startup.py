"""Bad settings stop every command at once with one line naming the variable, never a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.processes import run_tracker

LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO ")


def refused(args: tuple[str, ...], env: dict[str, str], variable: str) -> str:
    done = run_tracker(*args, env=env)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    # `serve` logs as it starts (alembic's INFO lines); what it says about the error is one line.
    said = [line for line in output.splitlines() if not LOG_LINE.match(line)]
    assert len(said) == 1, output
    output = said[0]
    assert variable in output, output
    return output


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("garbage", "not a database URL"),
        ("", "not a database URL"),
        ("postgresql://tracker@127.0.0.1/tracker", "not supported"),
        ("sqlite:///tracker.db", "not supported"),
        ("mysql+aiomysql://tracker@127.0.0.1/tracker", "not supported"),
        ("sqlite+aiosqlite:///{tmp}/missing/tracker.db", "does not exist"),
        ("sqlite+aiosqlite:///{tmp}", "is a directory"),
        ("sqlite+aiosqlite:///{tmp}/not-a-database.db", "cannot open or migrate"),
    ],
    ids=["garbage", "empty", "sync-postgres", "sync-sqlite", "other", "no-dir", "dir", "not-db"],
)
@pytest.mark.parametrize("command", [("db", "upgrade"), ("serve",)], ids=["upgrade", "serve"])
def test_a_bad_database_url_is_one_line(
    tmp_path: Path, url: str, words: str, command: tuple[str, ...]
) -> None:
    (tmp_path / "not-a-database.db").write_text("hello, not SQLite\n" * 100)
    env = {"TRACKER_DATABASE_URL": url.format(tmp=tmp_path)}
    assert words in refused(command, env, "TRACKER_DATABASE_URL")


def test_a_driver_that_is_not_installed_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "asyncpg.py").write_text('raise ImportError("not installed here")\n')
    env = {
        "PYTHONPATH": str(blocker),
        "TRACKER_DATABASE_URL": "postgresql+asyncpg://tracker@127.0.0.1:1/tracker",
    }
    assert "asyncpg is not installed" in refused(("db", "upgrade"), env, "TRACKER_DATABASE_URL")


def test_an_unreachable_postgres_is_one_line() -> None:
    env = {"TRACKER_DATABASE_URL": "postgresql+asyncpg://tracker@127.0.0.1:1/tracker"}
    refused(("serve",), env, "TRACKER_DATABASE_URL")


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("TRACKER_SWEEP_INTERVAL", "0s", "longer than zero"),
        ("TRACKER_RECONCILE_INTERVAL", "-PT5M", "longer than zero"),
        ("TRACKER_CALLBACK_MAX_SKEW", "-PT5M", "longer than zero"),
        ("TRACKER_LEASE_TTL", "0", "longer than zero"),
        ("TRACKER_STALE_AFTER", "99999999999d", "too long"),
        ("TRACKER_EVENT_RETENTION", "P99999999D", "at most"),
        ("TRACKER_RECONCILE_GRACE", "-1", "negative"),
        ("TRACKER_VOD_RATE_LIMIT", "nan", "finite"),
    ],
)
def test_durations_that_make_no_sense_are_refused(
    tmp_path: Path, variable: str, value: str, words: str
) -> None:
    env = {"TRACKER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/t.db", variable: value}
    assert words in refused(("serve",), env, variable)


def test_a_grace_of_zero_is_allowed(tmp_path: Path) -> None:
    env = {
        "TRACKER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/t.db",
        "TRACKER_RECONCILE_GRACE": "0s",
    }
    done = run_tracker("db", "upgrade", env=env)
    assert done.returncode == 0, done.stderr


def test_jobs_on_a_missing_database_file_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "never-made.db"
    env = {"TRACKER_DATABASE_URL": f"sqlite+aiosqlite:///{path}"}
    assert "does not exist" in refused(("jobs", "list"), env, "TRACKER_DATABASE_URL")
    assert not path.exists()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRACKER_VOD_REGION", "x@127.0.0.1:9/"),
        ("TRACKER_VOD_ENDPOINTS", "cn-shanghai=ftp://x"),
        ("TRACKER_VOD_ENDPOINT", "javascript:alert(1)"),
    ],
)
def test_a_region_or_endpoint_not_of_vods_shape_is_one_line(
    tmp_path: Path, variable: str, value: str
) -> None:
    env = {"TRACKER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/t.db", variable: value}
    refused(("serve",), env, variable)
