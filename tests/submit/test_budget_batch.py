"""The spend guard in `tracker submit`: durations asked 20 media a call, a batch stopped by the
day's budget (exit 3, one line) and resumed the next day, dry runs, media VOD does not know; and
two `tracker serve` replicas on PostgreSQL sharing one budget."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from tests.conftest import POSTGRES_URL
from tests.processes import TrackerProcess
from tests.submit.simulator import KEY, SECRET, RefusingVod, jobs_of, truth, vod_settings
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import Budget as BudgetRow
from tracker.models import JobState
from tracker.submit.batch import Item, run_batch
from tracker.submit.budget import Budget
from tracker.submit.estimate import dry_run
from tracker.submit.service import TypeOutcome
from tracker.submit.tally import Line
from tracker.vod import VodClient

TEN_MINUTES = 600.0
TAG = ("AIVideoTag",)


class Lines:
    """A Reporter that keeps every line, as `tracker submit` prints them."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, Line]] = []

    def started(self, total: int) -> None:
        pass

    def media(self, media_id: str, line: Line) -> None:
        self.lines.append((media_id, line))

    def advance(self) -> None:
        pass


async def test_a_batch_stops_at_the_budget_and_resumes_the_next_day(
    database_url: str, database: Database, fake: RefusingVod
) -> None:
    fake.faults.duration = TEN_MINUTES
    settings = vod_settings(database_url, fake.url, daily_minutes={"AIVideoTag": 25})
    items = [Item(f"m{n}", TAG) for n in range(6)]
    clock = FrozenClock(datetime(2026, 3, 4, 22, tzinfo=UTC))
    async with VodClient(settings) as vod:
        tallies = []
        for _ in range(3):  # 25 minutes a day: two 10-minute media a day
            tally = await run_batch(
                database, vod, items, clock, Lines(), budget=Budget.of(settings)
            )
            tallies.append(tally)
            clock.advance(timedelta(days=1))
        # One GetVideoInfos a day, for the media not submitted yet: 6, then 4, then 2.
        assert fake.calls == {"GetVideoInfos": 3, "SubmitAIJob": 6}
        # No limit on fingerprinting: 45 media, their durations asked 20 at a time.
        many = [Item(f"d{n}", ("AIMediaDNA",)) for n in range(45)]
        unlimited = await run_batch(database, vod, many, clock, Lines(), budget=Budget.of(settings))
        assert fake.calls["GetVideoInfos"] == 3 + 3
        assert "GetVideoInfo" not in fake.calls

    first = tallies[0]
    assert first.over_budget is not None
    assert (first.media_submitted, first.jobs[TypeOutcome.SUBMITTED]) == (2, 2)
    assert first.lines()[1] == (
        "stopped at the daily budget: 2 media submitted, 5 minutes of AIVideoTag left, "
        "the budget resets at 2026-03-05T00:00:00Z; run it again then to go on "
        "(4 media not started)"
    )
    assert [t.media_submitted for t in tallies] == [2, 2, 2]
    assert tallies[2].over_budget is None  # the third day finished the six
    assert tallies[1].jobs[TypeOutcome.SKIPPED] == 2  # what the first day submitted
    assert unlimited.media_submitted == 45
    assert set(truth(fake).values()) == {1}  # every media submitted once
    jobs = await jobs_of(database)
    assert {job.state for job in jobs} == {JobState.PROCESSING}
    assert {job.duration_s for job in jobs} == {TEN_MINUTES}
    async with database.session() as session:
        used = {
            (row.day.isoformat(), row.type): row.used_ms
            for row in await session.scalars(select(BudgetRow))
        }
    days = ["2026-03-04", "2026-03-05", "2026-03-06"]
    assert used == {
        **{(day, "AIVideoTag"): 1_200_000 for day in days},
        ("2026-03-07", "AIMediaDNA"): 45 * 600_000,
    }


async def test_media_vod_does_not_know_fail_alone(
    database_url: str, database: Database, fake: RefusingVod
) -> None:
    fake.media.remove("gone")
    fake.media.add("new", None, status="Uploading")
    settings = vod_settings(database_url, fake.url, daily_minutes={"AIVideoTag": 1000})
    items = [Item("m1", TAG), Item("gone", TAG), Item("new", TAG), Item("m2", TAG)]
    reporter = Lines()
    async with VodClient(settings) as vod:
        tally = await run_batch(
            database, vod, items, FrozenClock(), reporter, budget=Budget.of(settings)
        )
    assert tally.jobs == {TypeOutcome.SUBMITTED: 2, TypeOutcome.FAILED: 2}
    failed = {
        media: line.key for media, line in reporter.lines if line.outcome is TypeOutcome.FAILED
    }
    assert failed == {"gone": "media_not_found", "new": "duration_unknown"}
    assert {media for media, _ in truth(fake)} == {"m1", "m2"}
    assert not tally.ok


async def test_a_dry_run_plans_minutes_against_the_budget(
    database_url: str, database: Database, fake: RefusingVod
) -> None:
    for n, seconds in enumerate((60.0, 120.0, 600.0, 30.0)):
        fake.media.add(f"m{n}", seconds)
    settings = vod_settings(database_url, fake.url, daily_minutes={"AIVideoTag": 10})
    items = [Item(f"m{n}", ("AIVideoTag", "AIMediaDNA")) for n in range(4)]
    reporter = Lines()
    async with VodClient(settings) as vod:
        tally = await dry_run(
            database, items, reporter, force=False, vod=vod, budget=Budget.of(settings)
        )
    assert [(media, line.detail) for media, line in reporter.lines] == [
        ("m0", "1 min"),
        ("m1", "2 min"),
    ]
    lines = tally.lines(dry_run=True)
    assert lines[1].startswith(
        "the daily budget would stop it after 2 media: 7 minutes of AIVideoTag left, "
        "the next needs 10"
    )
    assert lines[-1] == (
        "would spend: 3 minutes of AIMediaDNA, 3 minutes of AIVideoTag (7 left today after it)"
    )
    assert fake.submit_calls == 0
    async with database.session() as session:
        assert list(await session.scalars(select(BudgetRow))) == []


def _env(database_url: str, fake_url: str, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "ALIBABA_"))}
    return env | {
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_VOD_ENDPOINT": fake_url,
        "TRACKER_VOD_RATE_LIMIT": "200",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
        **settings,
    }


async def _submit(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracker",
        "submit",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(120):
        output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def test_tracker_submit_from_file_stops_with_exit_3_and_resumes(
    database_url: str, database: Database, fake: RefusingVod, tmp_path: Path
) -> None:
    fake.faults.duration = TEN_MINUTES
    path = tmp_path / "media.csv"
    path.write_text("media_id,types\n" + "".join(f"m{n},AIVideoTag\n" for n in range(30)))
    env = _env(database_url, fake.url, TRACKER_DAILY_MINUTES="AIVideoTag=100")

    dry_code, dry = await _submit(env, "--from-file", str(path), "--dry-run")
    assert dry_code == 0, dry
    assert "the daily budget would stop it after 10 media" in dry
    assert fake.submit_calls == 0

    code, output = await _submit(env, "--from-file", str(path), "--concurrency", "4")
    assert code == 3, output
    (line,) = [line for line in output.splitlines() if "daily budget" in line]
    assert line.startswith("stopped at the daily budget: 10 media submitted, 0 minutes")
    assert "the budget resets at " in line
    assert fake.submit_calls == 10
    assert len(await jobs_of(database)) == 10

    # The next day, as the ledger will see it: today's minutes become yesterday's.
    async with database.write() as session:
        today = datetime.now(UTC).date()
        await session.execute(
            update(BudgetRow).where(BudgetRow.day == today).values(day=today - timedelta(days=1))
        )
    code, output = await _submit(env, "--from-file", str(path), "--concurrency", "4")
    assert code == 3, output
    assert "stopped at the daily budget: 10 media submitted" in output
    assert "10 skipped" in output  # yesterday's ten are not submitted again
    assert Counter(truth(fake).values()) == {1: 20}


postgres_only = pytest.mark.skipif(
    not POSTGRES_URL,
    reason="replicas share one PostgreSQL: runs in the PostgreSQL pass (TRACKER_TEST_DATABASE_URL)",
)


@postgres_only
async def test_two_replicas_share_one_budget(
    database_url: str, database: Database, fake: RefusingVod
) -> None:
    fake.faults.duration = TEN_MINUTES
    env = _env(
        database_url,
        fake.url,
        TRACKER_DAILY_MINUTES="AIVideoTag=30",
        TRACKER_API_TOKENS="t0ken",
        TRACKER_SCHEDULER="off",
        TRACKER_NOTIFY="off",
    )
    replicas = [TrackerProcess("serve", env=env), TrackerProcess("serve", env=env)]
    try:
        for replica in replicas:
            await asyncio.to_thread(replica.wait_ready)
        headers = {"Authorization": "Bearer t0ken"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:

            async def post(n: int) -> Any:
                body = {"media_id": f"m{n}", "types": ["AIVideoTag"]}
                return await http.post(f"{replicas[n % 2].url}/jobs", json=body)

            answers = await asyncio.gather(*(post(n) for n in range(12)))
            stats = (await http.get(f"{replicas[1].url}/stats")).json()["budget"]
    finally:
        for replica in replicas:
            replica.stop()
    assert sorted(a.status_code for a in answers) == [201] * 3 + [429] * 9
    assert fake.submit_calls == 3
    assert (stats["AIVideoTag"]["minutes_used"], stats["AIVideoTag"]["jobs"]) == (30.0, 3)
    async with database.session() as session:
        (row,) = await session.scalars(select(BudgetRow))
    assert row.used_ms == 1_800_000
