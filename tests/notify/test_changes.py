"""The change log: every change of a job's state or stale flag writes one row with the change, in
its transaction, whatever path made it; nothing else writes one."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.factories import add_job
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.db import Database
from tracker.models import Job, JobChange, JobState
from tracker.notify.changes import change_json, is_pruned, latest_seq, list_changes
from tracker.notify.claims import render_bodies, webhook_body
from tracker.scheduler.reconcile import Report
from tracker.scheduler.retention import prune_changes
from tracker.scheduler.service import Scheduler
from tracker.scheduler.sweep import flag_stale_jobs
from tracker.scheduler.verdicts import apply_list_result
from tracker.submit.claims import Refusal, SubmitRequest, claim_many, record_many
from tracker.transitions import Outcome, apply_outcome, apply_outcomes, mark_pending_many
from tracker.vod import ListResult, SubmitResult, VodOutcomeUnknown
from tracker.vod.results import AIJob

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


class Boom(Exception):
    pass


async def changes(database: Database, after: int = 0) -> list[JobChange]:
    async with database.session() as session:
        return list(await list_changes(session, after, 1000))


async def now_seq(database: Database) -> int:
    """The log's end: the changes a test's setup wrote (a job inserted `processing` is one)."""
    async with database.session() as session:
        return await latest_seq(session)


def success(job_id: str, media_id: str = "m1") -> Outcome:
    return Outcome(
        job_id=job_id,
        type="AIVideoTag",
        status="success",
        media_id=media_id,
        code="0",
        message="OK",
        data={"Keyword": [{"Tag": "cat"}]},
        event_time=T1,
    )


async def test_the_triggers_exist_at_head(database: Database) -> None:
    async with database.session() as session:
        if database.is_sqlite:
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'jobs'"
        else:
            query = (
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'jobs'::regclass "
                "AND NOT tgisinternal"
            )
        names = set((await session.execute(text(query))).scalars())
    # The console's counters have triggers on jobs too (tests/console/test_rollups.py).
    names = {name for name in names if "console" not in name}
    assert names == {"trg_jobs_change_on_update", "trg_jobs_change_on_insert"}


async def test_one_by_one_transition_writes_its_change(database: Database) -> None:
    await add_job(database, "j1", JobState.PROCESSING, media_id="m1")
    start = await now_seq(database)
    async with database.write() as session:
        await apply_outcome(session, success("j1"), T1)
    (change,) = await changes(database, start)
    assert (change.type, change.previous_state, change.state) == (
        "job.succeeded",
        "processing",
        "succeeded",
    )
    body = change_json(change)
    assert body["seq"] == change.seq >= 1
    assert body["timestamp"] == "2026-01-02T03:09:05Z"
    assert body["data"]["state"] == "succeeded"
    assert body["data"]["result"] == {"Keyword": [{"Tag": "cat"}]}
    assert body["data"]["previous_state"] == "processing"

    # Applying it again changes nothing, and writes nothing.
    async with database.write() as session:
        await apply_outcome(session, success("j1"), T1)
    assert len(await changes(database, start)) == 1


async def test_a_change_rolled_back_leaves_no_row(database: Database) -> None:
    await add_job(database, "j1", JobState.PROCESSING)
    start = await now_seq(database)

    async def change_then_fail() -> None:
        async with database.write() as session:
            await apply_outcome(session, success("j1"), T1)
            inside = await session.scalars(select(JobChange.type).where(JobChange.id > start))
            assert list(inside) == ["job.succeeded"]  # written inside the transaction
            raise Boom

    with pytest.raises(Boom):
        await change_then_fail()
    assert await changes(database, start) == []


async def test_the_change_data_is_the_job_as_the_api_shows_it(
    database: Database, client: httpx.AsyncClient
) -> None:
    await add_job(database, "j1", JobState.PROCESSING, media_id="m1")
    start = await now_seq(database)
    async with database.write() as session:
        await apply_outcome(session, success("j1"), T1)
    shown = (await client.get("/jobs/j1")).json()
    (change,) = await changes(database, start)
    data = change_json(change)["data"]
    assert data.pop("seq") == change.seq
    assert data.pop("previous_state") == "processing"
    assert data == shown


async def test_the_relays_bodies_are_the_feeds_changes(database: Database) -> None:
    """Each body the relay renders is the change the feed shows: a result with text beyond
    ASCII, nesting and floats, a failure with no result, and one whose stored result holds a
    number no JSON can carry."""
    await add_job(database, "j1", JobState.PROCESSING, media_id="m1")
    await add_job(database, "j2", JobState.PROCESSING, media_id="m2")
    await add_job(database, "j3", JobState.PROCESSING, media_id="m3")
    start = await now_seq(database)
    rich = {"Keyword": [{"Tag": '猫 "cat"', "Score": 0.875, "Times": [[1.5, 2.25]]}]}
    failed = Outcome("j2", "AIVideoTag", "fail", "m2", "E", "no", event_time=T1)
    async with database.write() as session:
        await apply_outcome(session, dataclasses.replace(success("j1"), data=rich), T1)
        await apply_outcome(session, failed, T1)
        await apply_outcome(session, success("j3"), T1)
        # Stored before the receiver refused numbers no JSON can carry: read back as null.
        huge, stored = ("NaN", "data") if database.is_sqlite else ("1e999", "data::text")
        replaced = f"replace({stored}, '\"cat\"', '{huge}')"
        if not database.is_sqlite:
            replaced = f"CAST({replaced} AS jsonb)"
        await session.execute(text(f"UPDATE job_changes SET data = {replaced} WHERE job_id = 'j3'"))
    shown = await changes(database, start)
    async with database.session() as session:
        bodies = await render_bodies(session, [c.seq for c in shown if c.seq is not None])
    assert len(shown) == 3
    assert "NaN" not in bodies[shown[2].seq or 0].decode()
    for change in shown:
        assert change.seq is not None
        assert json.loads(bodies[change.seq]) == json.loads(webhook_body(change_json(change)))


async def test_set_based_outcomes_write_one_row_per_job(database: Database) -> None:
    for n in range(5):
        await add_job(database, f"j{n}", JobState.PROCESSING, media_id=f"m{n}")
    start = await now_seq(database)
    outcomes = [success(f"j{n}", f"m{n}") for n in range(5)]
    outcomes.append(success("new", "m-new"))  # never seen: created by the set-based INSERT
    async with database.write() as session:
        await apply_outcomes(session, outcomes, T1)
    found = await changes(database, start)
    assert sorted((c.job_id, c.type, c.previous_state) for c in found) == sorted(
        [(f"j{n}", "job.succeeded", "processing") for n in range(5)]
        + [("new", "job.succeeded", None)]
    )
    assert [c.seq for c in found] == sorted(c.seq for c in found)
    assert len({c.seq for c in found}) == 6


async def test_marking_pending_changes_no_state_and_writes_nothing(database: Database) -> None:
    await add_job(database, "j1", JobState.PROCESSING)
    start = await now_seq(database)
    async with database.write() as session:
        await mark_pending_many(session, [success("j1")], T1)
    assert await changes(database, start) == []


async def test_the_sweep_writes_a_stale_change_per_flagged_job(database: Database) -> None:
    old = T0 - timedelta(hours=3)
    await add_job(database, "j1", JobState.PROCESSING, at=old)
    await add_job(database, "j2", JobState.PROCESSING, at=old)
    await add_job(database, "j3", JobState.PROCESSING, at=T0)  # too young
    start = await now_seq(database)
    async with database.write() as session:
        assert await flag_stale_jobs(session, Settings(), T0) == 2
    found = await changes(database, start)
    assert sorted((c.job_id, c.type, c.state) for c in found) == [
        ("j1", "job.stale", "processing"),
        ("j2", "job.stale", "processing"),
    ]
    assert all(change_json(c)["data"]["stale"] for c in found)
    async with database.write() as session:  # flagged already: no second change
        assert await flag_stale_jobs(session, Settings(), T0) == 0
    assert len(await changes(database, start)) == 2


async def test_a_stale_job_finishing_is_one_change(database: Database) -> None:
    await add_job(database, "j1", JobState.PROCESSING, stale=True, stale_at=T0)
    start = await now_seq(database)
    async with database.write() as session:
        await apply_outcome(session, success("j1"), T1)
    (change,) = await changes(database, start)
    assert change.type == "job.succeeded"
    assert change_json(change)["data"]["stale"] is False


async def test_reconciliation_writes_lost_and_finished_changes(database: Database) -> None:
    await add_job(database, "gone", JobState.PROCESSING)
    start = await now_seq(database)
    async with database.write() as session:
        await apply_list_result(
            session, ListResult(request_id="r", jobs=[], missing=["gone"]), T1, Report()
        )
    (change,) = await changes(database, start)
    assert (change.job_id, change.type, change.previous_state) == ("gone", "job.lost", "processing")


async def test_the_submitter_writes_submitted_failed_and_unknown(database: Database) -> None:
    requests = [SubmitRequest(f"m{n}", ("AIVideoTag",)) for n in range(3)]
    async with database.write() as session:
        claims = await claim_many(session, requests, T0)
    assert await changes(database) == []  # `submitting` is not a change anyone is told of
    answers = [
        (claims[0], SubmitResult(request_id="r", jobs=[AIJob("vod-1", "m0", "AIVideoTag")])),
        (claims[1], Refusal(VodOutcomeUnknown("timed out"), JobState.SUBMIT_FAILED)),
        (claims[2], Refusal(VodOutcomeUnknown("timed out"), JobState.SUBMIT_UNKNOWN)),
    ]
    async with database.write() as session:
        await record_many(session, answers, T1)
    found = {c.media_id: c for c in await changes(database)}
    assert {m: (c.type, c.previous_state) for m, c in found.items()} == {
        "m0": ("job.submitted", "submitting"),
        "m1": ("job.submit_failed", "submitting"),
        "m2": ("job.submit_unknown", "submitting"),
    }
    assert found["m0"].job_id == "vod-1"


async def test_any_other_update_of_a_job_writes_nothing(database: Database) -> None:
    row = await add_job(database, "j1", JobState.PROCESSING)
    start = await now_seq(database)
    async with database.write() as session:
        await session.execute(update(Job).where(Job.id == row).values(status="processing"))
    assert await changes(database, start) == []


async def test_seq_follows_commit_order_between_concurrent_writers(database: Database) -> None:
    """PostgreSQL draws `seq` at commit: the transaction that commits first gets the lower one,
    whichever changed its job first. (SQLite's single writer serialises them anyway.)"""
    first = await add_job(database, "j1", JobState.PROCESSING)
    second = await add_job(database, "j2", JobState.PROCESSING)
    if database.is_sqlite:
        pytest.skip("SQLite has one writer: transactions cannot interleave")
    start = await now_seq(database)
    early_change = asyncio.Event()
    late_commit = asyncio.Event()

    async def slow() -> None:
        async with database.write() as session:
            await session.execute(update(Job).where(Job.id == first).values(state="lost"))
            early_change.set()
            await late_commit.wait()

    async def fast() -> None:
        await early_change.wait()
        async with database.write() as session:
            await session.execute(update(Job).where(Job.id == second).values(state="lost"))
        async with database.session() as session:
            assert await latest_seq(session) == start + 1  # the slow change is not numbered yet
        late_commit.set()

    await asyncio.gather(slow(), fast())
    found = await changes(database, start)
    assert [(c.job_row_id, c.seq) for c in found] == [(second, start + 1), (first, start + 2)]


async def test_retention_prunes_a_prefix_of_the_log_and_the_feed_knows(
    database: Database,
) -> None:
    await add_job(database, "j1", JobState.PROCESSING, at=T0)  # seq 1 at T0
    await add_job(database, "j2", JobState.PROCESSING, at=T1)  # seq 2 at T1
    async with database.write() as session:
        await apply_outcome(session, success("j1"), T1)  # seq 3 at T1
    assert await prune_changes(database, T1) == 1
    assert [c.seq for c in await changes(database)] == [2, 3]
    async with database.session() as session:
        assert await is_pruned(session, 0)
        assert not await is_pruned(session, 1)
    assert await prune_changes(database, T1 + timedelta(days=1)) == 2
    assert await changes(database) == []
    async with database.session() as session:
        assert await is_pruned(session, 2)
        assert not await is_pruned(session, 3)


async def test_the_schedulers_retention_job_prunes_changes(database: Database) -> None:
    await add_job(database, "old", JobState.PROCESSING, at=T0 - timedelta(days=40))
    await add_job(database, "new", JobState.PROCESSING, at=T0)
    settings = Settings(database_url=str(database.url), event_retention=timedelta(days=30))
    scheduler = Scheduler(settings, database, vod=None, clock=FrozenClock(T0))
    await scheduler.retention()
    assert [c.job_id for c in await changes(database)] == ["new"]


async def test_a_stale_change_is_dated_when_the_job_was_flagged(database: Database) -> None:
    """Not by the job's last update (the sweep does not touch it): an old date would misdate
    the event and let retention prune the changes numbered before it."""
    submitted = T0 - timedelta(days=40)
    await add_job(database, "j1", JobState.PROCESSING, at=submitted)
    start = await now_seq(database)
    async with database.write() as session:
        assert await flag_stale_jobs(session, Settings(), T0) == 1
    (change,) = await changes(database, start)
    assert change.occurred_at == T0
    assert change_json(change)["timestamp"] == "2026-01-02T03:04:05Z"
    assert change_json(change)["data"]["updated_at"] == "2025-11-23T03:04:05Z"  # the job's own
    assert await prune_changes(database, T0 - timedelta(days=30)) == 1  # only job.submitted
    assert [c.type for c in await changes(database)] == ["job.stale"]


async def test_seq_goes_on_after_everything_was_pruned(database: Database) -> None:
    """A pruned `seq` is never given again, so a cursor from before the pruning is told so
    (410) instead of silently missing the changes numbered like the pruned ones."""
    await add_job(database, "j1", JobState.PROCESSING, at=T0)
    await add_job(database, "j2", JobState.PROCESSING, at=T0)
    assert await prune_changes(database, T1) == 2
    await add_job(database, "j3", JobState.PROCESSING, at=T1)
    async with database.write() as session:
        await apply_outcomes(session, [success("j3", "m3")], T1)
    found = await changes(database)
    assert [(c.job_id, c.seq) for c in found] == [("j3", 3), ("j3", 4)]
    if database.is_sqlite:  # one writer: `seq` is the id
        assert [c.id for c in found] == [3, 4]
    async with database.session() as session:
        assert await is_pruned(session, 1)
        assert not await is_pruned(session, 2)


async def _explain_nested(conn: AsyncConnection, *settings: str) -> list[str]:
    """The plans of what `conn` runs from now on, the triggers' statements included, as
    auto_explain reports them (with `settings` besides); the caller invalidates `conn` after."""
    plans: list[str] = []
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    raw.add_log_listener(lambda _conn, message: plans.append(message.message))
    for setting in (
        "LOAD 'auto_explain'",
        "SET auto_explain.log_min_duration = 0",
        "SET auto_explain.log_nested_statements = on",
        "SET auto_explain.log_level = notice",
        *settings,
    ):
        await conn.exec_driver_sql(setting)
    return plans


async def test_the_change_log_stays_linear_after_a_small_update_on_the_connection(
    database: Database,
) -> None:
    """PostgreSQL plans the trigger's join of its transition tables once per connection, with
    the row count of its first call. After a one-row update that plan must still read each
    transition table once, not once per row (a nested loop: a 20,000-row update took 46 s
    instead of 0.9 s). Checked on the plan the trigger ran, as auto_explain reports it."""
    if database.is_sqlite:
        pytest.skip("SQLite's change log is row triggers: no plan of a join to cache")
    for n in range(301):
        await add_job(database, f"j{n}", JobState.PROCESSING, media_id=f"m{n}")
    async with database.writer.connect() as conn:
        plans = await _explain_nested(
            conn, "SET auto_explain.log_analyze = on", "SET auto_explain.log_timing = off"
        )
        await conn.commit()
        await conn.execute(update(Job).where(Job.job_id == "j300").values(state="lost"))
        await conn.commit()
        plans.clear()
        await conn.execute(update(Job).where(Job.job_id != "j300").values(state="lost"))
        await conn.commit()
        await conn.invalidate()  # its settings go with it, not back to the pool
    (plan,) = (p for p in plans if "INSERT INTO job_changes" in p and "old_jobs" in p)
    # new_jobs and old_jobs: one scan of each, of all 300 rows, and none repeated per row.
    scans = re.findall(r"Named Tuplestore Scan .*\(actual rows=(\d+) loops=(\d+)\)", plan)
    assert scans == [("300", "1"), ("300", "1")], plan
    assert "Nested Loop" not in plan
    # The console's job counts join the same transition tables (migration 0006): linear too.
    (counts,) = (p for p in plans if "INSERT INTO console_job_counts" in p and "old_jobs" in p)
    loops = re.findall(r"Named Tuplestore Scan .*\(actual rows=\d+ loops=(\d+)\)", counts)
    assert len(loops) >= 2, counts
    assert set(loops) == {"1"}, counts
    assert "Nested Loop" not in counts
    assert len(await changes(database, 301)) == 301


async def test_the_triggers_stay_cheap_for_a_small_update_after_a_bulk_one(
    database: Database,
) -> None:
    """The reverse of the test above: after a bulk update on a connection, the plans cached
    with its row counts must not make each later small update pay for the whole table. The
    console's rollup of finished jobs' durations looked every change's job up by a hash join
    over a full scan of `jobs` (0.4 s a callback at 1,000,000 jobs), and the change log's own
    plan, costed for the bulk, was compiled by JIT at every call (0.5 s for 1,000 rows); the
    triggers now run without JIT, look jobs up by key and number changes without a bitmap scan
    (migration 0009)."""
    if database.is_sqlite:
        pytest.skip("SQLite's change log is row triggers: no plan of a join to cache")
    for n in range(300):
        await add_job(database, f"j{n}", JobState.PROCESSING, media_id=f"m{n}")
    async with database.writer.connect() as conn:
        await conn.execute(update(Job).where(Job.job_id != "j0").values(state="succeeded"))
        await conn.commit()
        plans = await _explain_nested(conn, "SET auto_explain.log_settings = on")
        await conn.execute(update(Job).where(Job.job_id == "j0").values(state="succeeded"))
        await conn.commit()
        await conn.invalidate()  # its settings go with it, not back to the pool
    (rollup,) = (p for p in plans if "INSERT INTO console_rollups" in p and "new_changes" in p)
    assert "Seq Scan on jobs" not in rollup, rollup
    assert "Index Scan using pk_jobs on jobs" in rollup, rollup
    triggered = [p for p in plans if "new_jobs" in p or "new_changes" in p]
    assert len(triggered) >= 3, plans
    for plan in triggered:
        assert "jit = 'off'" in plan, plan
    # Numbering at commit walks no bitmap of every dead NULL entry of the `seq` indexes.
    (numbering,) = (p for p in plans if "UPDATE job_changes c SET seq" in p)
    assert "enable_bitmapscan = 'off'" in numbering, numbering
    assert len(await changes(database)) == 600
