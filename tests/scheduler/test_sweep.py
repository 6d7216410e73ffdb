"""The stale sweep: thresholds, concurrency, and the partial index it reads."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import add_job, find_job, job_values, load_job, new_job
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.db import Database
from tracker.models import Job, JobChange, JobState, Origin
from tracker.scheduler import sweep as sweep_module
from tracker.scheduler.sweep import (
    PASS,
    due_job_ids,
    flag_stale_jobs,
    stale_sweep,
    sweep_stale_jobs,
)
from tracker.transitions import Outcome, apply_outcome

# Indexes whose entries are bounded by the jobs in flight, for the sweep's predicate.
IN_FLIGHT_INDEXES = ("ix_jobs_unflagged", "ix_jobs_stale_state")


async def sweep(database: Database, settings: Settings, now: datetime) -> int:
    async with database.write() as session:
        return await flag_stale_jobs(session, settings, now)


# --- stale sweep ---------------------------------------------------------------------------------


async def test_jobs_past_the_threshold_are_flagged_once(
    database: Database, settings: Settings, clock: FrozenClock
) -> None:
    start = clock()
    unfinished = [
        await add_job(database, at=start, job_id=f"j{n}", state=state)
        for n, state in enumerate(
            [JobState.PROCESSING, JobState.SUBMITTING, JobState.SUBMIT_UNKNOWN]
        )
    ]
    done = await add_job(database, at=start, job_id="done", state=JobState.SUCCEEDED)
    lost = await add_job(database, at=start, job_id="gone", state=JobState.LOST)
    young = await add_job(database, at=start + timedelta(minutes=30), job_id="young")

    assert await sweep(database, settings, start + timedelta(minutes=59)) == 0
    flagged_at = start + timedelta(minutes=61)
    assert await sweep(database, settings, flagged_at) == 3
    # Idempotent: a second run (or a second replica) flags nothing again and keeps stale_at.
    assert await sweep(database, settings, flagged_at + timedelta(minutes=5)) == 0
    for id in unfinished:
        job = await load_job(database, id)
        assert (job.stale, job.stale_at) == (True, flagged_at)
    for id in (done, lost, young):
        assert (await load_job(database, id)).stale is False

    # A flagged job that finishes is no longer stale but keeps when it was flagged.
    async with database.write() as session:
        outcome = Outcome(job_id="j0", type="AIVideoTag", status="success", media_id="m1")
        assert await apply_outcome(session, outcome, flagged_at + timedelta(minutes=7))
    job = await load_job(database, unfinished[0])
    assert (job.state, job.stale, job.stale_at) == (JobState.SUCCEEDED, False, flagged_at)
    assert await sweep(database, settings, flagged_at + timedelta(hours=5)) == 1  # "young"


async def test_per_type_thresholds(database: Database, clock: FrozenClock) -> None:
    settings = Settings(
        database_url=str(database.url),
        stale_after=timedelta(hours=1),
        stale_after_aimediadna=timedelta(hours=3),
    )
    start = clock()
    tag = await add_job(database, at=start, job_id="tag", type="AIVideoTag")
    dna = await add_job(database, at=start, job_id="dna", type="AIMediaDNA")
    other = await add_job(database, at=start, job_id="other", type="SomethingElse")

    assert await sweep(database, settings, start + timedelta(hours=2)) == 2
    assert (await load_job(database, tag)).stale
    assert (await load_job(database, other)).stale
    assert not (await load_job(database, dna)).stale
    assert await sweep(database, settings, start + timedelta(hours=3, seconds=1)) == 1
    assert (await load_job(database, dna)).stale


async def test_concurrent_sweeps_flag_each_job_once(
    database: Database, settings: Settings, clock: FrozenClock
) -> None:
    """Four replicas sweep at the same moment: together they flag each due job exactly once."""
    start = clock() - timedelta(hours=2)
    rows = [
        job_values(
            f"j{n}", stale=False, submitted_at=start + timedelta(seconds=n), updated_at=start
        )
        for n in range(2000)
    ]
    async with database.write() as session:
        await session.execute(insert(Job), rows)
    replicas = [Database(str(database.url)) for _ in range(4)]
    try:
        counts = await asyncio.gather(*(sweep(db, settings, clock()) for db in replicas))
    finally:
        for db in replicas:
            await db.dispose()
    assert sum(counts) == len(rows)
    async with database.session() as session:
        flagged = await session.scalar(select(func.count()).where(Job.stale_at == clock()))
    assert flagged == len(rows)


async def explain(database: Database, statement: Any) -> str:
    dialect = database.engine.dialect
    async with database.engine.connect() as conn:
        if database.is_sqlite:
            sql = statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
            rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")
            return "\n".join(str(row[-1]) for row in rows)
        compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        params = tuple(compiled.params[name] for name in compiled.positiontup)
        rows = await conn.exec_driver_sql(f"EXPLAIN {compiled}", params)
        return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize("override", [None, timedelta(hours=3)])
async def test_sweep_reads_the_partial_index(
    database: Database, clock: FrozenClock, override: timedelta | None
) -> None:
    """On a table of mostly finished jobs, with statistics, the sweep reads an index that holds
    only unfinished, unflagged jobs (SQLite: the partial index, whose predicate matches the
    UPDATE's; PostgreSQL may prefer (stale, state) with the same bound), never the whole table.
    benchmarks/sweep.py measures it at 1,000,000 rows."""
    start = clock() - timedelta(days=3)
    rows = [
        job_values(
            f"j{n}",
            JobState.SUCCEEDED if n % 50 else JobState.PROCESSING,
            type="AIVideoTag" if n % 2 else "AIMediaDNA",
            stale=False,
            submitted_at=start + timedelta(seconds=n * 60),
            updated_at=start,
        )
        for n in range(5000)
    ]
    async with database.write() as session:
        await session.execute(insert(Job), rows)
    async with database.engine.connect() as conn:
        await conn.exec_driver_sql("ANALYZE")
        await conn.commit()
    settings = Settings(database_url=str(database.url), stale_after_aimediadna=override)
    plan = await explain(database, stale_sweep(settings, clock()))
    bounded = ("ix_jobs_unflagged",) if database.is_sqlite else IN_FLIGHT_INDEXES
    assert any(index in plan for index in bounded), plan
    assert "Seq Scan" not in plan
    assert "SCAN jobs" not in plan


# --- the sweep in chunks (sweep_stale_jobs): a bounded write transaction each ----------------


async def add_due(
    database: Database, count: int, at: datetime, prefix: str = "", **fields: Any
) -> None:
    rows = [
        {
            "job_id": f"{prefix}j{n}",
            "media_id": f"{prefix}m{n}",
            "type": "AIVideoTag",
            "state": JobState.PROCESSING,
            "origin": Origin.SUBMITTED,
            "stale": False,
            "submitted_at": at + timedelta(seconds=n),
            "updated_at": at,
            **fields,
        }
        for n in range(count)
    ]
    async with database.write() as session:
        await session.execute(insert(Job), rows)


async def test_the_sweep_flags_chunk_by_chunk_each_job_once(
    database: Database, settings: Settings, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await add_due(database, 1_000, clock() - timedelta(hours=2))
    await add_job(database, at=clock(), job_id="young")
    chunks: list[list[int]] = []
    flag = sweep_module.flag_stale_jobs

    async def recorded(session: AsyncSession, *args: Any) -> int:
        chunks.append(list(args[2]))
        return await flag(session, *args)

    monkeypatch.setattr(sweep_module, "flag_stale_jobs", recorded)
    assert await sweep_stale_jobs(database, settings, clock(), chunk=300) == 1_000
    # Four transactions, in id order: each chunk's jobs (and change-log rows) sit together.
    assert [len(ids) for ids in chunks] == [300, 300, 300, 100]
    assert sum(chunks, []) == sorted(sum(chunks, []))
    async with database.session() as session:
        flagged = await session.scalar(select(func.count()).where(Job.stale_at == clock()))
        changes = await session.scalar(select(func.count()).where(JobChange.type == "job.stale"))
    assert (flagged, changes) == (1_000, 1_000)
    assert await sweep_stale_jobs(database, settings, clock(), chunk=300) == 0


async def test_a_writer_waiting_goes_in_between_chunks(
    database: Database, settings: Settings, clock: FrozenClock
) -> None:
    """The sweep does not hold the writer until it is done: a write asked for while a chunk
    runs (a callback, on SQLite's single writer) commits before the sweep ends."""
    await add_due(database, 1_000, clock() - timedelta(hours=2))
    chunk_ran = asyncio.Event()

    def executed(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("UPDATE jobs"):
            chunk_ran.set()

    event.listen(database.writer.sync_engine, "after_cursor_execute", executed)
    sweep_task = asyncio.create_task(sweep_stale_jobs(database, settings, clock(), chunk=100))
    await chunk_ran.wait()  # the first chunk's UPDATE ran; it commits next
    async with database.write() as session:
        session.add(new_job("callback-meanwhile", JobState.SUCCEEDED))
        flagged_then = await session.scalar(select(func.count()).where(Job.stale))
    assert await sweep_task == 1_000
    assert flagged_then is not None
    assert flagged_then < 1_000


async def test_concurrent_chunked_sweeps_flag_each_job_once(
    database: Database, settings: Settings, clock: FrozenClock
) -> None:
    await add_due(database, 2_000, clock() - timedelta(hours=2))
    replicas = [Database(str(database.url)) for _ in range(4)]
    try:
        counts = await asyncio.gather(
            *(sweep_stale_jobs(db, settings, clock(), chunk=150) for db in replicas)
        )
    finally:
        for db in replicas:
            await db.dispose()
    assert sum(counts) == 2_000
    async with database.session() as session:
        flagged = await session.scalar(select(func.count()).where(Job.stale_at == clock()))
        changes = await session.scalar(select(func.count()).where(JobChange.type == "job.stale"))
    assert (flagged, changes) == (2_000, 2_000)


async def test_a_chunk_is_updated_by_id(database: Database, clock: FrozenClock) -> None:
    """A chunk's UPDATE finds its jobs by primary key, not by walking every due job again for
    each chunk (quadratic in chunks); its ids come from the partial index."""
    await add_due(database, 20_000, clock() - timedelta(days=3), state=JobState.SUCCEEDED)
    await add_due(database, 2_000, clock() - timedelta(days=2), prefix="due-")
    async with database.engine.connect() as conn:
        await conn.exec_driver_sql("ANALYZE")
        await conn.commit()
    for override in (None, timedelta(hours=3)):
        settings = Settings(database_url=str(database.url), stale_after_aimediadna=override)
        ids = list(range(20_001, 20_051))
        chunk = stale_sweep(settings, clock(), ids, sqlite=database.is_sqlite)
        plan = await explain(database, chunk)
        if database.is_sqlite:
            assert plan == "SEARCH jobs USING INTEGER PRIMARY KEY (rowid=?)", plan
        else:
            assert "Index Scan using pk_jobs on jobs" in plan, plan
            assert "Index Cond: (id = ANY (" in plan, plan
        choose = await explain(database, due_job_ids(settings, clock(), PASS))
        # Read from an index whose entries for these conditions are jobs in flight.
        assert any(index in choose for index in (*IN_FLIGHT_INDEXES, "ix_jobs_state_")), choose
        assert "SCAN jobs" not in choose, choose
        assert "Seq Scan" not in choose, choose


async def test_a_job_finished_while_its_chunk_waits_is_not_flagged(
    database: Database, settings: Settings, clock: FrozenClock
) -> None:
    """PostgreSQL: a callback finishes a job of a chunk, and commits while the chunk waits for
    its row: the chunk re-checks the row and leaves it (SQLite: one writer at a time)."""
    if database.is_sqlite:
        pytest.skip("SQLite has one writer: a chunk cannot wait for a row")
    await add_due(database, 10, clock() - timedelta(hours=2))
    async with database.writer.connect() as callback:
        await callback.begin()
        await callback.execute(
            update(Job).where(Job.job_id == "j0").values(state=JobState.SUCCEEDED)
        )
        pid = await callback.scalar(select(func.pg_backend_pid()))
        sweep_task = asyncio.create_task(sweep_stale_jobs(database, settings, clock(), chunk=5))
        async with database.engine.connect() as watcher:
            while True:  # until the sweep waits for the callback's row lock
                blocked = await watcher.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE :pid = ANY (pg_blocking_pids(pid))"
                    ),
                    {"pid": pid},
                )
                await watcher.rollback()
                if blocked:
                    break
                await asyncio.sleep(0.01)
        await callback.commit()
    assert await sweep_task == 9
    job = await find_job(database, "j0")
    assert (job.state, job.stale) == (JobState.SUCCEEDED, False)


async def test_a_job_finished_after_the_ids_were_read_is_not_flagged(
    database: Database, settings: Settings, clock: FrozenClock
) -> None:
    """The ids are read before their chunks run: a job finished (or flagged) in between is
    checked again and left alone, on both databases."""
    await add_due(database, 10, clock() - timedelta(hours=2))
    async with database.session() as session:
        ids = sorted(await session.scalars(due_job_ids(settings, clock(), 100)))
    async with database.write() as session:
        await session.execute(
            update(Job).where(Job.job_id == "j3").values(state=JobState.SUCCEEDED)
        )
        await session.execute(
            update(Job).where(Job.job_id == "j4").values(stale=True, stale_at=clock())
        )
    async with database.write() as session:
        assert await flag_stale_jobs(session, settings, clock() + timedelta(minutes=1), ids) == 8
    assert (await find_job(database, "j3")).stale is False
    assert (await find_job(database, "j4")).stale_at == clock()
