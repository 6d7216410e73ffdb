"""The applier: every stored event is applied, a job's own in arrival order, none held up."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select

from tests.factories import T0, add_job, add_rows, find_job, new_event
from tracker.db import Database
from tracker.ingest import applier as applier_module
from tracker.ingest.applier import (
    APPLY_BATCH,
    BUSY_BATCH,
    MIN_BUSY_PAUSE,
    Applier,
    apply_pending,
)
from tracker.models import CallbackEvent, Job, JobState


async def unapplied(database: Database) -> int:
    async with database.session() as session:
        query = select(func.count()).where(CallbackEvent.applied.is_(None))
        return int(await session.scalar(query) or 0)


@pytest.mark.parametrize("mode", ["plain", "older", "confirm"])
async def test_one_jobs_backlog_does_not_hold_up_other_callbacks(
    database: Database, mode: str
) -> None:
    """Issue 13: 3,000 forged EventTimes for one JobId delayed an unrelated callback by ~31 s,
    as a turn applied only the first event of each job. Every turn now settles all it takes,
    in a few statements whatever the backlog, even when every event is older than the job's
    last outcome (`older`) or confirmation only marks the job (`confirm`)."""
    backlog = 1200
    confirm = mode == "confirm"
    last = T0 + timedelta(days=1) if mode == "older" else None
    await add_job(database, "flooded", event_time=last)
    await add_job(database, "unrelated")
    await add_rows(
        database,
        *(new_event("flooded", "success", T0 + timedelta(seconds=n)) for n in range(backlog)),
    )
    await add_rows(database, new_event("unrelated", "fail", T0 + timedelta(hours=1)))

    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(database.writer.sync_engine, "before_cursor_execute", count)
    turns = 0
    while await apply_pending(database, T0, confirm=confirm) == APPLY_BATCH:
        turns += 1
    event.remove(database.writer.sync_engine, "before_cursor_execute", count)
    assert turns + 1 == math.ceil((backlog + 1) / APPLY_BATCH)
    assert statements < 15 * (turns + 1)  # not one or two per event
    assert await unapplied(database) == 0

    unrelated = await find_job(database, "unrelated")
    flooded = await find_job(database, "flooded")
    if confirm:
        assert (unrelated.state, unrelated.pending_status) == (JobState.PROCESSING, "fail")
        assert flooded.pending_status == "success"
    elif mode == "older":
        assert unrelated.state == JobState.FAILED
        assert (flooded.state, flooded.event_time) == (JobState.PROCESSING, last)
    else:
        assert unrelated.state == JobState.FAILED
        # The first event in arrival order won; the rest found the job final.
        assert (flooded.state, flooded.event_time) == (JobState.SUCCEEDED, T0)
    async with database.session() as session:
        reasons = dict(
            (
                await session.execute(
                    select(CallbackEvent.reason, func.count()).group_by(CallbackEvent.reason)
                )
            ).all()
        )
    assert (
        reasons
        == {
            "plain": {"applied": 2, "already_final": backlog - 1},
            "older": {"applied": 1, "older_than_current": backlog},
            "confirm": {"pending_confirmation": backlog + 1},
        }[mode]
    )


async def test_events_of_one_job_in_one_turn_apply_in_arrival_order(database: Database) -> None:
    """An older event changes nothing; a newer one after it still applies, in the same turn."""
    await add_job(database, "j1", event_time=T0 + timedelta(minutes=5))
    await add_rows(
        database,
        new_event("j1", "success", T0),  # older than the job's last outcome
        new_event("j1", "fail", T0 + timedelta(minutes=10)),
        new_event("j1", "success", T0 + timedelta(minutes=20)),
    )
    assert await apply_pending(database, T0) == 3
    job = await find_job(database, "j1")
    assert (job.state, job.event_time) == (JobState.FAILED, T0 + timedelta(minutes=10))
    async with database.session() as session:
        reasons = list(
            await session.scalars(select(CallbackEvent.reason).order_by(CallbackEvent.id))
        )
    assert reasons == ["older_than_current", "applied", "already_final"]


async def test_stored_rows_the_receiver_now_refuses_are_never_applied(database: Database) -> None:
    """Rows stored before the receiver's rules (or handed back by a replay) meet them again."""
    rows = [
        new_event("a,b,c", "success", T0),
        new_event("ok-1", "processing", T0),
        new_event("ok-2", "success", T0),
        new_event("ok-3", "success", T0),
        new_event("ok-4", "success", T0),
    ]
    rows[2].event_type = "AIMediaAuditComplete"
    rows[3].event_type = "FileUploadComplete"
    rows[4].media_id = "m/1"
    await add_rows(database, *rows)
    assert await apply_pending(database, T0) == 5
    async with database.session() as session:
        results = (
            await session.execute(
                select(CallbackEvent.applied, CallbackEvent.reason).order_by(CallbackEvent.id)
            )
        ).all()
        assert await session.scalar(select(func.count()).select_from(Job)) == 0
    assert [tuple(result) for result in results] == [
        (False, "malformed: JobId or Status not of a completion event"),
        (False, "malformed: JobId or Status not of a completion event"),
        (False, "untracked_ai_type"),
        (False, "not_ai_event"),
        (False, "malformed: MediaId not of VOD's shape"),
    ]


@pytest.mark.parametrize("behind", [False, True], ids=["keeping-up", "behind"])
async def test_the_applier_pauses_only_while_recording_is_behind(
    database: Database, monkeypatch: pytest.MonkeyPatch, behind: bool
) -> None:
    """Issue 22: at 100 callbacks/s recording commits every 10 ms but never falls behind; an
    applier that paused after every commit kept each job invisible for tens of milliseconds
    (seconds on a loaded machine). While callbacks are recorded, turns are short (BUSY_BATCH,
    the SQLite writer stays free for the next commit); a pause comes only when events wait."""
    await add_rows(
        database,
        *(new_event(f"j{n}", "success", T0 + timedelta(seconds=n)) for n in range(150)),
    )
    limits: list[int] = []
    pauses: list[float] = []

    async def counted(*args: Any, limit: int, **kwargs: Any) -> int:
        limits.append(limit)
        return await apply_pending(*args, limit=limit, **kwargs)

    monkeypatch.setattr(applier_module, "apply_pending", counted)
    applier = Applier(database, clock=lambda: T0, busy=lambda: behind, recording=lambda: True)

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(applier, "pause", pause)
    await applier.start()
    try:
        applier.wake()
        for _ in range(400):  # bounded: at most ~20 s
            if not await unapplied(database):
                break
            await asyncio.sleep(0.05)
    finally:
        await applier.stop()
    assert await unapplied(database) == 0
    assert limits[:3] == [BUSY_BATCH] * 3  # 150 events: three short turns
    if behind:
        assert len(pauses) >= 3
        assert all(pause >= MIN_BUSY_PAUSE for pause in pauses)
    else:
        assert pauses == []
