"""`tracker subscriptions` and `tracker changes tail`, on the database directly."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner, Result

from tests.factories import add_rows, new_job
from tracker.cli import main
from tracker.models import JobState


def run(url: str, *args: str, private: bool = True) -> Result:
    env = {"TRACKER_DATABASE_URL": url, "TRACKER_NOTIFY_ALLOW_PRIVATE": "on" if private else "off"}
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def test_subscriptions_add_list_deliveries_replay_remove(fresh_database_url: str) -> None:
    url = fresh_database_url
    added = run(url, "subscriptions", "add", "http://127.0.0.1:9/hook", "--events", "job.failed")
    assert added.exit_code == 0, added.output
    sub = json.loads(added.output)
    assert sub["secret"].startswith("whsec_")
    assert sub["event_types"] == ["job.failed"]
    listed = json.loads(run(url, "subscriptions", "list").output)
    assert [s["id"] for s in listed] == [sub["id"]]
    assert "secret" not in listed[0]
    shown = run(url, "subscriptions", "deliveries", str(sub["id"]))
    assert json.loads(shown.output) == []
    replayed = run(url, "subscriptions", "replay", str(sub["id"]), "--since", "2026-01-01")
    assert "queued 0" in replayed.output
    assert run(url, "subscriptions", "remove", str(sub["id"])).exit_code == 0
    assert json.loads(run(url, "subscriptions", "list").output) == []
    missing = run(url, "subscriptions", "remove", str(sub["id"]))
    assert missing.exit_code == 1
    assert "no subscription" in missing.output


def test_a_private_url_is_refused_without_the_flag(fresh_database_url: str) -> None:
    refused = run(fresh_database_url, "subscriptions", "add", "http://10.0.0.1/", private=False)
    assert refused.exit_code == 1
    assert "private" in refused.output


def test_changes_tail_prints_one_json_change_a_line(fresh_database_url: str) -> None:
    for job in (new_job("j1", media_id="m1"), new_job("j2", JobState.FAILED, media_id="m2")):
        asyncio.run(add_rows(fresh_database_url, job))  # one transaction each, j1's first
    tailed = run(fresh_database_url, "changes", "tail", "--after", "0", "--once")
    lines = [json.loads(line) for line in tailed.output.splitlines()]
    assert [(c["type"], c["data"]["job_id"]) for c in lines] == [
        ("job.submitted", "j1"),
        ("job.failed", "j2"),
    ]
    failed = run(
        fresh_database_url, "changes", "tail", "--after", "0", "--once", "--type", "job.failed"
    )
    assert len(failed.output.splitlines()) == 1
