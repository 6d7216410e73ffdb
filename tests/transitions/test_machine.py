"""The one state machine: final states stay final, older news changes nothing, races apply once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Update, create_engine, delete, event, func, select

from tests import factories
from tracker.db import Database, upgrade
from tracker.models import Job, JobState, Origin
from tracker.transitions import (
    ALLOWED,
    Applied,
    Outcome,
    adopt_job_id,
    apply_outcome,
    apply_outcomes,
    finish_many,
    give_up_submit,
    mark_many,
    mark_pending,
    mark_pending_many,
    transition,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


# Jobs of one media unless told: a callback may resolve a submit_unknown job of the same media.
add_job = partial(factories.add_job, at=T0, media_id="m1")
get_job = factories.find_job


async def apply(database: Database, outcome: Outcome, now: datetime = T0) -> Applied:
    async with database.write() as session:
        return await apply_outcome(session, outcome, now)


def success(job_id: str = "j1", at: datetime = T0, **kw: object) -> Outcome:
    return Outcome(
        job_id=job_id,
        type="AIVideoTag",
        status="success",
        media_id="m1",
        code="0",
        message="OK",
        data={"Keyword": []},
        event_time=at,
        **kw,
    )  # type: ignore[arg-type]


def fail(job_id: str = "j1", at: datetime = T0) -> Outcome:
    return Outcome(
        job_id=job_id,
        type="AIVideoTag",
        status="fail",
        media_id="m1",
        code="InternalError",
        message="boom",
        event_time=at,
    )


def test_final_states_have_no_way_out() -> None:
    for state in (JobState.SUCCEEDED, JobState.FAILED, JobState.SUBMIT_FAILED):
        assert ALLOWED[state] == frozenset()
    assert set(ALLOWED) == set(JobState)


async def test_success_completes_a_processing_job(database: Database) -> None:
    await add_job(database, "j1", JobState.PROCESSING, stale=True, stale_at=T0)
    assert await apply(database, success(), T0 + timedelta(minutes=1)) is Applied.APPLIED
    job = await get_job(database, "j1")
    assert job.state == JobState.SUCCEEDED
    assert job.result == {"Keyword": []}
    assert job.completed_at == T0 + timedelta(minutes=1)
    assert (job.stale, job.stale_at) == (False, T0)  # no longer stale, keeps when it was flagged


async def test_fail_after_success_changes_nothing(database: Database) -> None:
    await add_job(database, "j1", JobState.PROCESSING)
    await apply(database, success())
    assert await apply(database, fail(at=T0 + timedelta(seconds=5))) is Applied.ALREADY_FINAL
    job = await get_job(database, "j1")
    assert (job.state, job.code) == (JobState.SUCCEEDED, "0")


async def test_older_progress_does_not_revive_a_lost_job(database: Database) -> None:
    await add_job(database, "j1", JobState.LOST, event_time=T0)
    old = Outcome(job_id="j1", type="AIVideoTag", status="processing", event_time=T0 - timedelta(1))
    assert await apply(database, old) is Applied.OLDER
    assert (await get_job(database, "j1")).state == JobState.LOST


async def test_lost_job_learns_its_real_outcome(database: Database) -> None:
    await add_job(database, "j1", JobState.LOST)
    assert await apply(database, success()) is Applied.APPLIED
    assert (await get_job(database, "j1")).state == JobState.SUCCEEDED


async def test_processing_status_only_refreshes(database: Database) -> None:
    await add_job(database, "j1", JobState.PROCESSING)
    later = T0 + timedelta(minutes=3)
    progress = Outcome(job_id="j1", type="AIVideoTag", status="Processing")
    assert await apply(database, progress, later) is Applied.PROGRESS
    job = await get_job(database, "j1")
    assert (job.state, job.status, job.updated_at) == (JobState.PROCESSING, "processing", later)


async def test_unknown_job_id_becomes_a_callback_job(database: Database) -> None:
    dna = Outcome(job_id="dna1", type="AIMediaDNA", status="success", media_id="m9", event_time=T0)
    assert await apply(database, dna) is Applied.CREATED
    job = await get_job(database, "dna1")
    assert (job.origin, job.state, job.media_id) == (Origin.CALLBACK, JobState.SUCCEEDED, "m9")
    assert await apply(database, dna) is Applied.ALREADY_FINAL


async def test_outcome_resolves_a_submit_unknown_job(database: Database) -> None:
    await add_job(database, None, JobState.SUBMIT_UNKNOWN, media_id="m1")
    assert await apply(database, success("real-id")) is Applied.RESOLVED
    job = await get_job(database, "real-id")
    assert (job.origin, job.state) == (Origin.SUBMITTED, JobState.SUCCEEDED)
    async with database.session() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 1


async def test_transition_respects_allowed_sources(database: Database) -> None:
    await add_job(database, "j1", JobState.SUCCEEDED)
    async with database.write() as session:
        moved = await transition(session, Job.job_id == "j1", JobState.LOST, T0)
    assert moved == 0
    assert (await get_job(database, "j1")).state == JobState.SUCCEEDED


@pytest.mark.parametrize("first", ["success", "fail"])
async def test_concurrent_outcomes_apply_once(database: Database, first: str) -> None:
    """Two writers racing with different outcomes: exactly one wins, the other sees it final."""
    await add_job(database, "j1", JobState.PROCESSING)
    a, b = (success(), fail()) if first == "success" else (fail(), success())
    other = Database(str(database.url.render_as_string(hide_password=False)))
    try:

        async def run(db: Database, outcome: Outcome) -> Applied:
            async with db.write() as session:
                return await apply_outcome(session, outcome, T0)

        results = await asyncio.gather(run(database, a), run(other, b))
    finally:
        await other.dispose()
    assert sorted(results) == sorted([Applied.APPLIED, Applied.ALREADY_FINAL])
    winner = a if results[0] is Applied.APPLIED else b
    assert (await get_job(database, "j1")).state == winner.target


async def pend(database: Database, outcome: Outcome, now: datetime = T0) -> Applied:
    async with database.write() as session:
        return await mark_pending(session, outcome, now)


async def test_a_pending_outcome_waits_for_confirmation(database: Database) -> None:
    await add_job(database, "j1", JobState.PROCESSING)
    later = T0 + timedelta(minutes=5)
    assert await pend(database, success()) is Applied.PENDING
    assert await pend(database, fail(), later) is Applied.PENDING  # the latest word, first time
    job = await get_job(database, "j1")
    assert (job.state, job.pending_status, job.pending_since) == (JobState.PROCESSING, "fail", T0)
    assert job.result is None
    # Reconciliation applies VOD's own answer, which clears the pending mark.
    assert await apply(database, success(), later) is Applied.APPLIED
    job = await get_job(database, "j1")
    assert (job.state, job.pending_status, job.pending_since) == (JobState.SUCCEEDED, None, None)


async def test_a_final_job_is_not_marked_pending(database: Database) -> None:
    await add_job(database, "j1", JobState.FAILED)
    assert await pend(database, success()) is Applied.ALREADY_FINAL
    assert (await get_job(database, "j1")).pending_status is None


async def test_an_unknown_job_is_learned_undated_then_marked(database: Database) -> None:
    assert await pend(database, success("new")) is Applied.PENDING
    job = await get_job(database, "new")
    assert (job.state, job.origin, job.pending_status) == (
        JobState.PROCESSING,
        "callback",
        "success",
    )
    assert job.event_time is None  # so VOD's answer, whatever its time, is not "older"
    assert await apply(database, success("new", at=T0 - timedelta(hours=1))) is Applied.APPLIED


async def test_non_terminal_outcomes_apply_directly(database: Database) -> None:
    await add_job(database, "j1", JobState.LOST)
    progress = Outcome(job_id="j1", type="AIVideoTag", status="processing", event_time=T0)
    assert await pend(database, progress) is Applied.PROGRESS
    assert (await get_job(database, "j1")).state == JobState.PROCESSING


async def _seed_every_case(database: Database) -> list[Outcome]:
    """One job per case apply_outcome distinguishes, and the outcome that meets it."""
    later, earlier = T0 + timedelta(minutes=5), T0 - timedelta(minutes=5)
    await add_job(database, "processing", JobState.PROCESSING, stale=True, pending_status="fail")
    await add_job(database, "lost", JobState.LOST, media_id="m2")
    await add_job(database, "done", JobState.SUCCEEDED, media_id="m3")
    await add_job(database, "newer", JobState.PROCESSING, media_id="m4", event_time=later)
    await add_job(database, "dated", JobState.PROCESSING, media_id="m5", event_time=earlier)
    await add_job(database, None, JobState.SUBMIT_UNKNOWN, media_id="waiting")
    await add_job(database, "lost2", JobState.LOST, media_id="m6")
    return [
        replace(success("processing"), data="not json {"),
        fail("lost"),
        fail("done"),
        success("newer"),
        success("dated", at=None),  # type: ignore[arg-type]
        replace(success("resolves"), media_id="waiting"),
        replace(success("discovered"), media_id="elsewhere", data=None),
        replace(fail("lost2"), status="processing"),  # not terminal: one by one
    ]


async def _snapshot(database: Database) -> list[tuple[object, ...]]:
    async with database.session() as session:
        jobs = (await session.scalars(select(Job).order_by(Job.media_id, Job.job_id))).all()
    columns = [c.key for c in Job.__table__.columns if c.key != "id"]
    return [tuple(getattr(job, name) for name in columns) for job in jobs]


async def test_apply_outcomes_matches_apply_outcome_one_by_one(database: Database) -> None:
    outcomes = await _seed_every_case(database)
    async with database.write() as session:
        together = await apply_outcomes(session, outcomes, T0 + timedelta(hours=1))
    after_together = await _snapshot(database)
    async with database.write() as session:
        await session.execute(delete(Job))
    await _seed_every_case(database)
    one_by_one = [await apply(database, o, T0 + timedelta(hours=1)) for o in outcomes]
    assert (
        together
        == one_by_one
        == [
            Applied.APPLIED,
            Applied.APPLIED,
            Applied.ALREADY_FINAL,
            Applied.OLDER,
            Applied.APPLIED,
            Applied.RESOLVED,
            Applied.CREATED,
            Applied.PROGRESS,
        ]
    )
    assert after_together == await _snapshot(database)


async def test_apply_outcomes_refuses_two_outcomes_of_one_job(database: Database) -> None:
    async with database.write() as session:
        with pytest.raises(ValueError, match="one outcome per job"):
            await apply_outcomes(session, [success("j1"), fail("j1")], T0)


@pytest.mark.parametrize("statement", [finish_many, mark_many])
def test_sqlite_looks_up_each_job_of_a_batch_by_job_id(
    tmp_path: Path, statement: Callable[[str], Update]
) -> None:
    """Without statistics SQLite once chose to scan every job in a source state, for every
    batch (140 events/s with 10,000 processing jobs): the plan must search by JobId."""
    path = tmp_path / "plan.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    engine = create_engine(f"sqlite:///{path}")
    seen: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    with engine.connect() as conn:
        conn.execute(statement("sqlite"), {"outcomes": "[]", "now": T0})
        statement, parameters = seen[-1]
        plan = [
            row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        ]
        conn.rollback()
    engine.dispose()
    assert any(step.startswith("SEARCH jobs USING INDEX") and "(job_id=?)" in step for step in plan)
    assert not any(step.startswith("SCAN jobs") or "ix_jobs_state" in step for step in plan)


async def test_mark_pending_many_matches_mark_pending_one_by_one(database: Database) -> None:
    async def seed() -> list[Outcome]:
        await add_job(database, "processing", JobState.PROCESSING)
        await add_job(database, "lost", JobState.LOST, media_id="m2")
        await add_job(database, "done", JobState.SUCCEEDED, media_id="m3")
        await add_job(database, "marked", JobState.PROCESSING, media_id="m4", pending_since=T0)
        await add_job(database, None, JobState.SUBMIT_UNKNOWN, media_id="waiting")
        await add_job(database, "lost2", JobState.LOST, media_id="m6")
        return [
            success("processing"),
            fail("lost"),
            fail("done"),
            fail("marked"),
            replace(success("resolves"), media_id="waiting"),
            replace(success("discovered"), media_id="elsewhere"),
            replace(fail("lost2"), status="processing"),  # not terminal: one by one
        ]

    later = T0 + timedelta(hours=1)
    outcomes = await seed()
    async with database.write() as session:
        together = await mark_pending_many(session, outcomes, later)
    after_together = await _snapshot(database)
    async with database.write() as session:
        await session.execute(delete(Job))
    await seed()
    one_by_one = []
    for outcome in outcomes:
        async with database.write() as session:
            one_by_one.append(await mark_pending(session, outcome, later))
    assert (
        together
        == one_by_one
        == [
            Applied.PENDING,
            Applied.PENDING,
            Applied.ALREADY_FINAL,
            Applied.PENDING,
            Applied.PENDING,
            Applied.PENDING,
            Applied.PROGRESS,
        ]
    )
    assert after_together == await _snapshot(database)


# --- adopting a lost JobId (tracker/scheduler/recover.py) ----------------------------------------


async def row_id(database: Database, state: JobState, **extra: object) -> int:
    await add_job(database, None, state, **extra)
    async with database.session() as session:
        return int(await session.scalar(select(func.max(Job.id))) or 0)


async def adopt(database: Database, id: int, outcome: Outcome) -> bool:
    async with database.write() as session:
        return await adopt_job_id(session, id, outcome, T0)


@pytest.mark.parametrize("state", [JobState.SUBMITTING, JobState.SUBMIT_UNKNOWN])
async def test_a_waiting_job_adopts_its_job_id_once(database: Database, state: JobState) -> None:
    id = await row_id(database, state)
    running = replace(success("found"), status="processing", data=None)
    assert await adopt(database, id, running)
    job = await get_job(database, "found")
    assert (job.id, job.state, job.status, job.completed_at) == (
        id,
        JobState.PROCESSING,
        "processing",
        None,
    )
    # The row holds a JobId now: no other JobId, and no second adoption, changes it.
    assert not await adopt(database, id, success("another"))
    assert (await get_job(database, "found")).state == JobState.PROCESSING


async def test_adoption_takes_vod_s_final_state(database: Database) -> None:
    id = await row_id(database, JobState.SUBMIT_UNKNOWN)
    assert await adopt(database, id, success("found"))
    job = await get_job(database, "found")
    assert (job.id, job.state, job.result, job.code) == (
        id,
        JobState.SUCCEEDED,
        {"Keyword": []},
        "0",
    )


async def test_a_job_id_held_by_another_row_is_not_adopted(database: Database) -> None:
    await add_job(database, "held", JobState.PROCESSING)
    id = await row_id(database, JobState.SUBMIT_UNKNOWN, media_id="m2")
    assert not await adopt(database, id, success("held"))
    async with database.session() as session:
        job = await session.get(Job, id)
    assert job is not None
    assert (job.state, job.job_id) == (JobState.SUBMIT_UNKNOWN, None)


async def test_giving_up_is_final_and_only_for_waiting_jobs(database: Database) -> None:
    waiting = await row_id(database, JobState.SUBMIT_UNKNOWN)
    await add_job(database, "known", JobState.PROCESSING, media_id="m3")
    async with database.write() as session:
        assert await give_up_submit(session, waiting, T0, code="NoSuchJob", message="none")
        known = await session.scalar(select(Job.id).where(Job.job_id == "known"))
        assert known is not None
        assert not await give_up_submit(session, known, T0, code="NoSuchJob", message="none")
    async with database.session() as session:
        job = await session.get(Job, waiting)
    assert job is not None
    assert (job.state, job.code, job.completed_at) == (JobState.SUBMIT_FAILED, "NoSuchJob", T0)
    assert (await get_job(database, "known")).state == JobState.PROCESSING
