"""`tracker events replay`: re-applying stored callbacks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner
from sqlalchemy import select

from tests.factories import add_job, load_job, new_event
from tracker.cli import main
from tracker.cli.events import parse_since
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.ingest.replay import replay_events
from tracker.models import CONTRADICTED, CallbackEvent, Job, JobState


async def test_replay_applies_unapplied_callbacks_through_the_applier(
    database: Database, clock: FrozenClock
) -> None:
    when = clock() - timedelta(hours=2)
    await add_job(database, at=when, job_id="fixed")
    await add_job(database, at=when, job_id="denied")
    async with database.write() as session:
        session.add_all(
            [
                # Stored while a bug made applying fail; the job still waits for it.
                new_event("fixed", "success", when, applied=False, reason="apply_error: KeyError"),
                new_event("denied", "success", when, applied=False, reason=CONTRADICTED),
                new_event("early", "success", when - timedelta(days=9), applied=False, reason="x"),
            ]
        )
    tally = await replay_events(database, clock, since=when - timedelta(days=1), confirm=False)
    assert tally == {"applied": 1}
    async with database.session() as session:
        states = dict((await session.execute(select(Job.job_id, Job.state))).all())
        reasons = dict(
            (await session.execute(select(CallbackEvent.job_id, CallbackEvent.reason))).all()
        )
    assert states == {"fixed": JobState.SUCCEEDED, "denied": JobState.PROCESSING}
    assert reasons["denied"] == CONTRADICTED
    assert reasons["early"] == "x"  # before --since


async def test_events_replay_command(
    database_url: str, database: Database, clock: FrozenClock
) -> None:
    await add_job(database, at=clock(), job_id="fixed")
    async with database.write() as session:
        session.add(
            new_event("fixed", "fail", clock(), applied=False, reason="apply_error: KeyError")
        )
    env = {"TRACKER_DATABASE_URL": database_url}
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["events", "replay", "--since", "2026-01-01T00:00:00Z"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "replayed 1 callbacks: 1 applied" in result.output
    assert (await load_job(database, 1)).state == JobState.FAILED
    bad = await asyncio.to_thread(
        CliRunner().invoke, main, ["events", "replay", "--since", "soon"], env=env
    )
    assert bad.exit_code == 2
    assert "neither a duration" in bad.output


def test_parse_since() -> None:
    now = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2026-01-02T03:04:05Z", now) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_since("2026-01-02T03:04:05", now) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
