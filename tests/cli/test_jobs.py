"""`tracker jobs list` and `tracker jobs show`, reading the database directly."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner, Result

from tests.factories import add_rows, new_event, new_job
from tracker.cli import main
from tracker.models import JobState

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def jobs_and_a_callback(fresh_database_url: str) -> None:
    """Twelve jobs a minute apart (every third succeeded, job-04 stale, job-00 with a result and
    a MediaId that looks like rich markup) and a callback of job-00 that was not applied."""
    jobs = [
        new_job(
            f"job-{n:02d}",
            JobState.PROCESSING if n % 3 else JobState.SUCCEEDED,
            media_id="[bold]m" if n == 0 else f"m{n}",
            type="AIVideoTag" if n % 2 else "AIMediaDNA",
            stale=n == 4,
            result={"tags": ["cat"]} if n == 0 else None,
            at=T0 + timedelta(minutes=n),
        )
        for n in range(12)
    ]
    callback = new_event("job-00", "success", T0, applied=False, reason="already_final")
    asyncio.run(add_rows(fresh_database_url, *jobs, callback))


def run(url: str, *args: str) -> Result:
    result = CliRunner().invoke(
        main, args, env={"TRACKER_DATABASE_URL": url}, catch_exceptions=False
    )
    return result


@pytest.mark.usefixtures("jobs_and_a_callback")
def test_list_json_filters_and_pages(fresh_database_url: str) -> None:
    result = run(
        fresh_database_url, "jobs", "list", "--state", "processing", "--json", "--limit", "3"
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert [item["job_id"] for item in body["items"]] == ["job-11", "job-10", "job-08"]
    more = run(
        fresh_database_url,
        "jobs",
        "list",
        "--state",
        "processing",
        "--json",
        "--cursor",
        body["next_cursor"],
    )
    ids = [item["job_id"] for item in json.loads(more.output)["items"]]
    assert ids == ["job-07", "job-05", "job-04", "job-02", "job-01"]

    mixed = run(
        fresh_database_url,
        "jobs",
        "list",
        "--state",
        "succeeded,processing",
        "--type",
        "AIVideoTag",
        "--json",
    )
    assert [i["job_id"] for i in json.loads(mixed.output)["items"]] == [
        "job-11", "job-09", "job-07", "job-05", "job-03", "job-01"
    ]  # fmt: skip
    stale = run(fresh_database_url, "jobs", "list", "--stale", "--json")
    assert [i["job_id"] for i in json.loads(stale.output)["items"]] == ["job-04"]


@pytest.mark.usefixtures("jobs_and_a_callback")
def test_list_table(fresh_database_url: str) -> None:
    result = run(fresh_database_url, "jobs", "list", "--type", "AIMediaDNA")
    assert result.exit_code == 0
    lines = [line for line in result.output.splitlines() if "job-" in line]
    assert [line.split()[1] for line in lines] == [f"job-{n:02d}" for n in (10, 8, 6, 4, 2, 0)]
    assert "[bold]m" in result.output  # ids are shown as text, never as rich markup


def test_empty_list(fresh_database_url: str) -> None:
    assert run(fresh_database_url, "jobs", "list").output.strip() == "no jobs match"
    as_json = json.loads(run(fresh_database_url, "jobs", "list", "--json").output)
    assert as_json == {"items": [], "next_cursor": None}


def test_bad_state_is_a_usage_error(fresh_database_url: str) -> None:
    result = run(fresh_database_url, "jobs", "list", "--state", "done")
    assert result.exit_code == 2
    assert "'done' is not one of" in result.output


@pytest.mark.usefixtures("jobs_and_a_callback")
def test_show(fresh_database_url: str) -> None:
    as_json = run(fresh_database_url, "jobs", "show", "job-00", "--json")
    body = json.loads(as_json.output)
    assert body["state"] == "succeeded"
    assert body["result"] == {"tags": ["cat"]}
    table = run(fresh_database_url, "jobs", "show", "job-00")
    assert table.exit_code == 0
    assert "already_final" in table.output
    assert '{"tags": ["cat"]}' in table.output
    missing = run(fresh_database_url, "jobs", "show", "nope")
    assert missing.exit_code == 1
    assert "no job with id 'nope'" in missing.output
