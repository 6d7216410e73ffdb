"""The counts and hourly rollups the console draws from: kept exact by triggers (migration 0006)
through whatever statements change the rows, on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib.util
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, select, text, update

from tests.factories import add_job, new_event, new_job
from tracker.console import rollups
from tracker.db import Database
from tracker.ingest.inbox import Inbox
from tracker.models import (
    CallbackEvent,
    CallbackRefusal,
    Delivery,
    DeliveryAttempt,
    Heartbeat,
    Job,
    JobChange,
    JobState,
    SchedulerRun,
    Subscription,
)
from tracker.transitions import Outcome, apply_outcome

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
HOUR = rollups.hour_of(NOW)
REGIONS = ("cn-shanghai", "cn-beijing", None)
TYPES = ("AIVideoTag", "AIMediaDNA")
STATES = [state.value for state in JobState]


def migration() -> object:
    path = Path(__file__).parents[2] / "migrations" / "versions" / "0006_console.py"
    spec = importlib.util.spec_from_file_location("migration_0006", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reader_buckets_durations_as_the_migration_does() -> None:
    assert migration().DURATION_EDGES == rollups.DURATION_EDGES  # type: ignore[attr-defined]


async def truth(database: Database) -> dict[tuple[str, str, str, bool], int]:
    async with database.session() as session:
        rows = await session.execute(
            text(
                "SELECT type, coalesce(region, ''), state, stale, count(*) FROM jobs "
                "GROUP BY type, coalesce(region, ''), state, stale"
            )
        )
        return {(t, r, s, bool(st)): int(n) for t, r, s, st, n in rows}


async def counted(database: Database) -> dict[tuple[str, str, str, bool], int]:
    async with database.session() as session:
        return (await rollups.job_counts(session)).rows


async def test_counts_follow_every_insert_update_and_delete(database: Database) -> None:
    """A seeded random program of single- and multi-row statements, the counters checked
    against a GROUP BY after each step."""
    rng = random.Random(20)
    for step in range(60):
        async with database.write() as session:
            action = rng.choice(["insert", "insert", "state", "stale", "region", "delete", "many"])
            ids = list(await session.scalars(select(Job.id)))
            if action == "insert" or not ids:
                session.add_all(
                    new_job(
                        f"j{step}-{i}",
                        rng.choice([JobState.PROCESSING, JobState.SUBMITTING]),
                        type=rng.choice(TYPES),
                        region=rng.choice(REGIONS),
                        at=NOW,
                    )
                    for i in range(rng.randint(1, 4))
                )
            elif action == "state":
                await session.execute(
                    update(Job).where(Job.id == rng.choice(ids)).values(state=rng.choice(STATES))
                )
            elif action == "stale":
                await session.execute(
                    update(Job)
                    .where(Job.id.in_(rng.sample(ids, min(3, len(ids)))))
                    .values(stale=True)
                )
            elif action == "region":
                await session.execute(
                    update(Job).where(Job.id == rng.choice(ids)).values(region="ap-southeast-1")
                )
            elif action == "delete":
                await session.execute(delete(Job).where(Job.id == rng.choice(ids)))
            else:  # one statement moving many rows between many keys, some not at all
                await session.execute(
                    update(Job)
                    .where(Job.id.in_(rng.sample(ids, min(6, len(ids)))))
                    .values(state=JobState.SUCCEEDED, stale=False, updated_at=NOW)
                )
        assert await counted(database) == await truth(database), f"after step {step}: {action}"
    assert sum((await counted(database)).values()) > 10


async def rollup(database: Database, metric: str) -> rollups.Hourly:
    async with database.session() as session:
        return await rollups.hourly(session, metric, HOUR - timedelta(hours=30))


async def test_finished_jobs_and_their_durations_are_rolled_up_by_hour(database: Database) -> None:
    # Submitted 90 s, 20 min and 2 h before the outcome reaches the tracker.
    for name, before, status in (("a", 90, "success"), ("b", 1200, "fail"), ("c", 7200, "success")):
        await add_job(database, name, at=NOW - timedelta(seconds=before), type="AIVideoTag")
        async with database.write() as session:
            outcome = Outcome(
                job_id=name, type="AIVideoTag", status=status, media_id=f"media-{name}"
            )
            await apply_outcome(session, outcome, NOW)
    changes = await rollup(database, "changes")
    assert rollups.series(changes, [HOUR], "job.succeeded") == [2]
    assert rollups.series(changes, [HOUR], "job.failed") == [1]
    durations = await rollup(database, "duration")
    buckets = sorted(bucket for (_h, key, bucket), n in durations.items() for _ in range(n))
    edges = rollups.DURATION_EDGES
    expected = sorted(next(i for i, edge in enumerate(edges) if s < edge) for s in (90, 1200, 7200))
    assert buckets == expected
    p50 = rollups.duration_series(durations, [HOUR], "AIVideoTag", 0.5)[0]
    assert p50 is not None
    assert 900 <= p50 <= 1800


async def test_callbacks_received_and_repeated_through_the_real_inbox(database: Database) -> None:
    inbox = Inbox(database, clock=lambda: NOW, confirm=False)
    await inbox.start()
    try:
        for job_id in ("x1", "x2", "x1", "x1", "x3"):  # x1 delivered three times
            row = {
                "dedup_key": f"k-{job_id}",
                "event_type": "AIVideoTagComplete",
                "job_id": job_id,
                "media_id": "m",
                "status": "success",
                "event_time": NOW,
                "body": "{}",
                "headers": {},
                "received_at": NOW,
                "applied": None,
                "reason": None,
            }
            await inbox.record(row)
    finally:
        await inbox.stop()
    callbacks = await rollup(database, "callbacks")
    assert rollups.series(callbacks, [HOUR], "received") == [3]
    assert rollups.series(callbacks, [HOUR], "repeated") == [2]


async def test_refusals_malformed_bodies_and_delivery_attempts_are_counted(
    database: Database,
) -> None:
    async with database.write() as session:
        session.add(new_event("bad", "success", NOW, applied=False, reason="malformed: no JobId"))
        session.add(
            CallbackRefusal(
                received_at=NOW, reason="bad_signature", status=401, message="x", detail={}, count=3
            )
        )
        sub = Subscription(
            url="https://example.com",
            enabled=True,
            secret="whsec_x",
            source="api",
            cursor_seq=0,
            created_at=NOW,
            updated_at=NOW,
        )
        session.add(sub)
        await session.flush()
        delivery = Delivery(
            subscription_id=sub.id,
            change_seq=1,
            status="pending",
            attempts=0,
            trigger="scheduled",
            created_at=NOW,
            updated_at=NOW,
        )
        session.add(delivery)
        await session.flush()
        session.add_all(
            DeliveryAttempt(
                delivery_id=delivery.id,
                attempted_at=NOW,
                status_code=code,
                duration_ms=5.0,
                trigger="scheduled",
            )
            for code in (200, 204, 500, None)
        )
    callbacks = await rollup(database, "callbacks")
    assert rollups.series(callbacks, [HOUR], "refused") == [1 + 3]
    assert rollups.series(callbacks, [HOUR], "received") == [0]
    deliveries = await rollup(database, "deliveries")
    assert rollups.series(deliveries, [HOUR], "sent") == [2]
    assert rollups.series(deliveries, [HOUR], "failed") == [2]


async def test_each_finished_scheduler_run_is_kept_and_old_ones_dropped(database: Database) -> None:
    async with database.write() as session:
        session.add(Heartbeat(name="sweep", owner="a", started_at=NOW))
    for i in range(105):
        async with database.write() as session:
            start = NOW + timedelta(seconds=i)
            await session.execute(
                update(Heartbeat).where(Heartbeat.name == "sweep").values(started_at=start)
            )
            await session.execute(
                update(Heartbeat)
                .where(Heartbeat.name == "sweep")
                .values(finished_at=start, duration_s=0.1, ok=True, summary=f"run {i}")
            )
    async with database.session() as session:
        runs = list(await session.scalars(select(SchedulerRun).order_by(SchedulerRun.id)))
    assert len(runs) == 100
    assert runs[-1].summary == "run 104"
    assert runs[0].summary == "run 5"


async def test_the_console_triggers_exist_at_head(database: Database) -> None:
    module = migration()
    async with database.session() as session:
        if database.is_sqlite:
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
            expected = set(module.SQLITE_TRIGGERS)  # type: ignore[attr-defined]
        else:
            query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
            expected = set(module.PG_TRIGGERS)  # type: ignore[attr-defined]
        found = set(await session.scalars(text(query)))
    assert expected <= found


async def test_the_migration_counts_what_was_there_before_it(database_url: str) -> None:
    """Upgrading a database that already has jobs and changes starts the counts from them."""
    database = Database(database_url)
    try:
        await add_job(database, "before-1", JobState.PROCESSING)
        async with database.write() as session:
            await apply_outcome(
                session,
                Outcome(job_id="before-1", type="AIVideoTag", status="success", media_id="m"),
                NOW,
            )
        # What 0006 found when it ran, rebuilt as it does: the backfill statements themselves.
        async with database.write() as session:
            await session.execute(text("DELETE FROM console_job_counts"))
            await session.execute(text("DELETE FROM console_rollups"))
            postgres = not database.is_sqlite
            await session.execute(text(migration().BACKFILL_COUNTS))  # type: ignore[attr-defined]
            for statement in migration()._backfill_rollups(postgres):  # type: ignore[attr-defined]
                await session.execute(text(statement))
        assert await counted(database) == await truth(database)
        changes = await rollup(database, "changes")
        async with database.session() as session:
            logged = await session.scalar(
                select(func.count()).select_from(JobChange).where(JobChange.type == "job.succeeded")
            )
        assert rollups.series(changes, [HOUR], "job.succeeded") == [logged]
    finally:
        await database.dispose()


async def test_unapplied_callbacks_are_read_from_their_partial_index(database: Database) -> None:
    async with database.write() as session:
        session.add(new_event("u1", "success", NOW, applied=False, reason="untracked_ai_type"))
        session.add(new_event("u2", "success", NOW, applied=True, reason="applied"))
    from tracker.console.reads import recent_not_applied

    async with database.session() as session:
        found = await recent_not_applied(session, NOW - timedelta(hours=1))
        assert [event.job_id for event in found] == ["u1"]
        sql = "EXPLAIN QUERY PLAN" if database.is_sqlite else "EXPLAIN"
        if not database.is_sqlite:  # a handful of rows: make the planner show what it could use
            await session.execute(text("SET LOCAL enable_seqscan = off"))
        compiled = (
            select(CallbackEvent.id)
            .where(text("applied = false"), CallbackEvent.received_at >= NOW)
            .compile(session.get_bind(), compile_kwargs={"literal_binds": True})
        )
        plan = " ".join(str(row) for row in await session.execute(text(f"{sql} {compiled}")))
    assert "ix_callback_events_not_applied" in plan
