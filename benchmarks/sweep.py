"""Benchmark 4: the stale sweep and the change log at scale, on SQLite and PostgreSQL.

Runs the real sweep (`sweep_stale_jobs`: 1,000 jobs per transaction, in id order) on
SQLite and, with --postgres, on PostgreSQL, against tables built like production: mostly finished
jobs, some in flight, some already stale, and a change log of one row per job. Scenarios (name:
table rows, due rows), timed --repeat times, interleaved:

  small-0     100,000, none due      a sweep that finds nothing, the usual case
  big-0       1,000,000, none due
  scan-0      big-0 as one UPDATE with indexes disabled: what a table-proportional sweep costs
  small-10k   100,000, 10,000 due    (the control table holds only the old candidates)
  big-10k     1,000,000, 10,000 due
  big-100k    1,000,000, 100,000 due
  scan-10k    big-10k as one UPDATE with indexes disabled
  nolog-10k   big-10k as one UPDATE with the change log's trigger off: the sweep before the
  nolog-100k  change log existed, the baseline of its cost
  was-10k     SQLite: big-10k as one UPDATE with migration 0004's change log (triggers and
  was-100k    index): the sweep before migration 0005

Also measured: the longest a sweep's transaction held the writer (SQLite's inbox waits behind
it), stand-in callbacks (a one-row write every 10 ms through the same writer) while big-100k runs
against the same without a sweep, a 20,000-row update of `jobs` after one-row updates on the
same connection against the same on a fresh connection (PostgreSQL caches the change-log
trigger's plan per connection: migration 0005), and the reverse: a one-row finish after a
20,000-row one on the same connection (finish-after-bulk) against one after a one-row one
(finish-one), and that against a one-row update that records no change (touch-one; 0009).

    python benchmarks/sweep.py [--postgres postgresql+asyncpg://...] [--rows 1000000] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import percentile
from sqlalchemy import event, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from tracker.config import Settings
from tracker.db import Database, upgrade
from tracker.models import CallbackEvent
from tracker.scheduler.sweep import CHUNK, PASS, due_job_ids, stale_sweep, sweep_stale_jobs

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SETTINGS_KW = {"stale_after": timedelta(hours=1)}
MAX_DUE = 100_000  # ids 1..MAX_DUE are old; the first `due` of them are unfinished
IN_FLIGHT = 10_000  # unfinished, submitted in the last 30 minutes: not due
ALREADY_STALE = 5_000  # unfinished and flagged earlier: not due again
UPDATE_ROWS = 20_000  # the bulk update after one-row updates (finished jobs, ids past the rest)
SMALL_UPDATES = 3
CALLBACK_EVERY = 0.010
TRIGGER = "trg_jobs_change_on_update"


def _ts(moment: datetime, sqlite: bool) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f" if sqlite else "%Y-%m-%d %H:%M:%S.%f+00")


def populate_sql(first: int, last: int, sqlite: bool) -> str:
    """Rows `first..last`: old candidates, in-flight, already stale, then finished jobs."""
    old = _ts(NOW - timedelta(hours=3), sqlite)
    base = _ts(NOW - timedelta(days=30), sqlite)
    recent = _ts(NOW - timedelta(minutes=30), sqlite)
    if sqlite:
        gen = (
            f"WITH RECURSIVE g(n) AS (SELECT {first} UNION ALL SELECT n + 1 FROM g "
            f"WHERE n < {last}) "
        )
        src = "FROM g"
    else:
        gen = ""
        src = f"FROM generate_series({first}, {last}) AS g(n)"
    n = "n"

    def seconds(expr: str, at: str) -> str:
        if sqlite:  # the text form SQLAlchemy stores: 'YYYY-MM-DD HH:MM:SS.ffffff'
            return f"strftime('%Y-%m-%d %H:%M:%f000', '{at}', '+' || ({expr}) || ' seconds')"
        return f"timestamptz '{at}' + ({expr}) * interval '1 second'"

    def concat(a: str, b: str) -> str:
        return f"{a} || {b}" if sqlite else f"{a} || {b}::text"

    fresh = MAX_DUE + IN_FLIGHT
    stale_end = fresh + ALREADY_STALE
    state = (
        f"CASE WHEN {n} <= {MAX_DUE} THEN 'succeeded' WHEN {n} <= {stale_end} THEN 'processing' "
        f"WHEN {n} % 10 = 0 THEN 'failed' ELSE 'succeeded' END"
    )
    # Ids in the order of submission, as the tracker gives them: the old candidates over an
    # hour, the ones in flight over the last 30 minutes.
    submitted = (
        f"CASE WHEN {n} <= {MAX_DUE} THEN {seconds(f'{n} * 3600.0 / {MAX_DUE}', old)} "
        f"WHEN {n} <= {fresh} THEN {seconds(f'({n} - {MAX_DUE}) * 1800.0 / {IN_FLIGHT}', recent)} "
        f"ELSE {seconds(f'{n} % 2500000', base)} END"
    )
    stale = f"({n} > {fresh} AND {n} <= {stale_end})"
    return (
        "INSERT INTO jobs (job_id, media_id, type, state, origin, stale, stale_at, submitted_at, "
        f"updated_at, completed_at) {gen}SELECT {concat(repr('j'), n)}, {concat(repr('m'), n)}, "
        f"CASE WHEN {n} % 2 = 0 THEN 'AIVideoTag' ELSE 'AIMediaDNA' END, {state}, 'submitted', "
        f"{stale}, CASE WHEN {stale} THEN {submitted} END, {submitted}, {submitted}, "
        f"CASE WHEN {n} > {stale_end} THEN {submitted} END {src}"
    )


class Bench:
    """One database under test, and what its writer's connection was held for."""

    def __init__(self, url: str) -> None:
        self.database = Database(url, sqlite_synchronous="NORMAL")
        self.settings = Settings(database_url=url, **SETTINGS_KW)  # type: ignore[arg-type]
        self.holds: list[float] | None = None
        pool = self.database.writer.sync_engine.pool
        event.listen(pool, "checkout", self._checkout)
        event.listen(pool, "checkin", self._checkin)
        self._out: dict[int, float] = {}
        self.last_sweep = 1.0
        self.small_updates = 0

    def _checkout(self, dbapi_conn: Any, record: Any, proxy: Any) -> None:
        self._out[id(record)] = time.perf_counter()

    def _checkin(self, dbapi_conn: Any, record: Any) -> None:
        started = self._out.pop(id(record), None)
        if self.holds is not None and started is not None:
            self.holds.append(time.perf_counter() - started)

    @asynccontextmanager
    async def change_log_off(self) -> AsyncIterator[None]:
        """The update trigger off for the block (setup, and the before-the-change-log baseline)."""
        db = self.database
        async with db.writer.begin() as conn:
            if db.is_sqlite:
                found = await conn.exec_driver_sql(
                    f"SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = '{TRIGGER}'"
                )
                create = found.scalar_one()
                await conn.exec_driver_sql(f"DROP TRIGGER {TRIGGER}")
            else:
                await conn.exec_driver_sql(f"ALTER TABLE jobs DISABLE TRIGGER {TRIGGER}")
        try:
            yield
        finally:
            async with db.writer.begin() as conn:
                if db.is_sqlite:
                    await conn.exec_driver_sql(create)
                else:
                    await conn.exec_driver_sql(f"ALTER TABLE jobs ENABLE TRIGGER {TRIGGER}")

    @asynccontextmanager
    async def change_log_0004(self) -> AsyncIterator[None]:
        """SQLite: migration 0004's triggers and (media_id, seq) index for the block, to time the
        sweep as it was before 0005 (one UPDATE) in the same run."""
        spec = importlib.util.spec_from_file_location("v0004", MIGRATIONS / "0004_notifications.py")
        assert spec is not None
        assert spec.loader is not None
        v0004 = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(v0004)
        names = ("trg_jobs_change_on_update", "trg_jobs_change_on_insert")
        found = (  # only the change log's own: the console's counters stay as they are
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name IN "
            f"('{names[0]}', '{names[1]}')"
        )
        media = "ix_job_changes_media_id_seq"
        async with self.database.writer.begin() as conn:
            current = list((await conn.exec_driver_sql(found)).scalars())
            for name in names:
                await conn.exec_driver_sql(f"DROP TRIGGER {name}")
            for statement in v0004.SQLITE:
                await conn.exec_driver_sql(statement)
            await conn.exec_driver_sql(f"CREATE INDEX {media} ON job_changes (media_id, seq)")
        try:
            yield
        finally:
            async with self.database.writer.begin() as conn:
                for name in names:
                    await conn.exec_driver_sql(f"DROP TRIGGER {name}")
                for statement in current:
                    await conn.exec_driver_sql(statement)
                await conn.exec_driver_sql(f"DROP INDEX {media}")

    async def reset(self, due: int) -> None:
        """Make ids 1..due unfinished and unflagged, the other old candidates finished."""
        async with self.change_log_off(), self.database.writer.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE jobs SET stale = false, stale_at = NULL, state = CASE WHEN id <= "
                    ":due THEN 'processing' ELSE 'succeeded' END WHERE id <= :max"
                ),
                {"due": due, "max": MAX_DUE},
            )
        if not self.database.is_sqlite:
            async with self.database.engine.connect() as conn:
                auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await auto.exec_driver_sql("VACUUM ANALYZE jobs")

    async def sweep(self, due: int, how: str, holds: list[float] | None = None) -> float:
        """One timed sweep: `flow` (the scheduler's), `scan` (one UPDATE, no index), `nolog`
        (one UPDATE, change log off) or `0004` (one UPDATE, migration 0004's change log)."""
        await self.reset(due)
        if how == "nolog":
            async with self.change_log_off():
                elapsed, flagged = await self._one_update(indexed=True)
        elif how == "0004":
            async with self.change_log_0004():
                elapsed, flagged = await self._one_update(indexed=True)
        elif how == "scan":
            elapsed, flagged = await self._one_update(indexed=False)
        else:
            self.holds = holds if holds is not None else []
            started = time.perf_counter()
            flagged = await sweep_stale_jobs(self.database, self.settings, NOW)
            elapsed = time.perf_counter() - started
            self.holds = None
        if flagged != due:
            raise SystemExit(f"sweep flagged {flagged} rows, expected {due}")
        return elapsed

    async def _one_update(self, *, indexed: bool) -> tuple[float, int]:
        statement = stale_sweep(self.settings, NOW)
        started = time.perf_counter()
        async with self.database.write() as session:
            if indexed:
                result = await session.execute(statement)
            elif self.database.is_sqlite:
                sql = str(
                    statement.compile(
                        dialect=self.database.writer.dialect,
                        compile_kwargs={"literal_binds": True},
                    )
                ).replace("UPDATE jobs ", "UPDATE jobs NOT INDEXED ", 1)
                result = await session.execute(text(sql))
            else:
                await session.execute(text("SET LOCAL enable_indexscan = off"))
                await session.execute(text("SET LOCAL enable_bitmapscan = off"))
                result = await session.execute(statement)
        return time.perf_counter() - started, int(result.rowcount)  # type: ignore[attr-defined]

    async def callbacks_beside(self, due: int | None) -> list[float]:
        """Latencies of stand-in callbacks, one write every 10 ms, while a sweep of `due` jobs
        runs (None: for as long, without one)."""
        latencies: list[float] = []
        done = asyncio.Event()

        async def callbacks() -> None:
            while not done.is_set():
                started = time.perf_counter()
                async with self.database.write() as session:
                    await session.execute(
                        insert(CallbackEvent).values(
                            dedup_key=uuid.uuid4().hex,
                            body="{}",
                            headers={},
                            received_at=NOW,
                            deliveries=1,
                        )
                    )
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(CALLBACK_EVERY)

        if due is None:
            task = asyncio.create_task(callbacks())
            await asyncio.sleep(self.last_sweep)
        else:
            await self.reset(due)
            task = asyncio.create_task(callbacks())
            started = time.perf_counter()
            await sweep_stale_jobs(self.database, self.settings, NOW)
            self.last_sweep = time.perf_counter() - started
        done.set()
        await task
        return latencies

    async def bulk_update(self, after_small: bool, state: str) -> float:
        """A 20,000-row update of `jobs` (each a change) on a new connection, after one-row
        updates on that connection or as its first statement."""
        first = MAX_DUE + IN_FLIGHT + ALREADY_STALE + 1
        database = Database(str(self.database.url), sqlite_synchronous="NORMAL")
        try:
            async with database.writer.connect() as conn:
                if after_small:  # a change each, as applying one callback makes
                    self.small_updates += 1
                    small = ("lost", "succeeded")[self.small_updates % 2]
                    for n in range(SMALL_UPDATES):
                        await _update(conn, small, first + UPDATE_ROWS + n, 1)
                return await _update(conn, state, first, UPDATE_ROWS)
        finally:
            await database.dispose()

    async def one_row(self, first: int, finish: bool = True) -> float:
        """A one-row update on a new connection after a finish of `first` rows on it (which
        plans the triggers with its row counts): a finish (a callback finishing a job: the
        change log and the console's rollups), or with `finish` false a touch of the row that
        records no change, the baseline. The plans cached for a bulk must not make a later
        finish pay for the whole table (migration 0009)."""
        start = MAX_DUE + IN_FLIGHT + ALREADY_STALE + 1 + 2 * UPDATE_ROWS  # rows of their own
        database = Database(str(self.database.url), sqlite_synchronous="NORMAL")
        try:
            async with database.writer.connect() as conn:
                await _finish(conn, start, first)
                if finish:
                    return await _finish(conn, start + UPDATE_ROWS, 1)
                return await _touch(conn, start + UPDATE_ROWS)
        finally:
            await database.dispose()

    async def plan(self) -> str:
        """The plans of reading the due ids and of one chunk's UPDATE."""
        sqlite = self.database.is_sqlite
        async with self.database.session() as session:
            ids = sorted(await session.scalars(due_job_ids(self.settings, NOW, PASS)))[:CHUNK]
        plans = []
        for statement in (
            due_job_ids(self.settings, NOW, PASS),
            stale_sweep(self.settings, NOW, ids, sqlite=sqlite),
        ):
            kw = {"literal_binds": True} if sqlite else {"render_postcompile": True}
            compiled = statement.compile(dialect=self.database.engine.dialect, compile_kwargs=kw)
            async with self.database.engine.connect() as conn:
                if sqlite:
                    rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")
                    plans.append("; ".join(str(r[-1]) for r in rows))
                else:
                    params = tuple(compiled.params[name] for name in compiled.positiontup or ())
                    rows = await conn.exec_driver_sql(f"EXPLAIN {compiled}", params)
                    plans.append("; ".join(r[0].strip() for r in rows if "Filter" not in r[0]))
        return "\n  chunk: ".join(plans)

    async def fill(self, first: int, last: int, chunk: int = 200_000) -> None:
        for start in range(first, last + 1, chunk):
            end = min(last, start + chunk - 1)
            async with self.database.writer.begin() as conn:
                await conn.exec_driver_sql(populate_sql(start, end, self.database.is_sqlite))


async def _timed(conn: AsyncConnection, sql: str, **params: int | str) -> float:
    """Seconds `sql` takes, committed in a transaction of its own."""
    started = time.perf_counter()
    async with conn.begin():
        await conn.execute(text(sql), params)
    return time.perf_counter() - started


async def _update(conn: AsyncConnection, state: str, first: int, count: int) -> float:
    sql = "UPDATE jobs SET state = :state WHERE id >= :first AND id < :end"
    return await _timed(conn, sql, state=state, first=first, end=first + count)


async def _finish(conn: AsyncConnection, first: int, count: int) -> float:
    """Finished jobs finished again the other way: a change to a final state for every row."""
    sql = (
        "UPDATE jobs SET state = CASE WHEN state = 'succeeded' THEN 'failed' "
        "ELSE 'succeeded' END WHERE id >= :first AND id < :end"
    )
    return await _timed(conn, sql, first=first, end=first + count)


async def _touch(conn: AsyncConnection, row: int) -> float:
    """A one-row update that changes nothing a trigger records."""
    return await _timed(conn, "UPDATE jobs SET message = message WHERE id = :id", id=row)


Results = dict[str, list[float]]


async def bench(url: str, rows: int, repeat: int) -> tuple[Results, dict[str, Any]]:
    run = Bench(url)
    times: Results = {}
    extra: dict[str, Any] = {"holds": [], "cb_idle": [], "cb_sweep": []}

    async def timed(name: str, due: int, how: str = "flow") -> None:
        holds = extra["holds"] if name == "big-100k" else None
        times.setdefault(name, []).append(await run.sweep(due, how, holds))

    try:
        print(f"  filling {MAX_DUE:,} rows ...", file=sys.stderr)
        await run.fill(1, MAX_DUE)  # the control table: the old candidates only
        for _ in range(repeat):
            await timed("small-0", 0)
            await timed("small-10k", 10_000)
        print(f"  filling to {rows:,} rows ...", file=sys.stderr)
        await run.fill(MAX_DUE + 1, rows)
        for r in range(repeat):
            print(f"  round {r + 1} of {repeat} ...", file=sys.stderr)
            await timed("big-0", 0)
            await timed("scan-0", 0, "scan")
            await timed("nolog-10k", 10_000, "nolog")
            await timed("big-10k", 10_000)
            await timed("nolog-100k", 100_000, "nolog")
            await timed("big-100k", 100_000)
            if run.database.is_sqlite:  # PostgreSQL: 0004's trigger is the quadratic one
                await timed("was-10k", 10_000, "0004")
                await timed("was-100k", 100_000, "0004")
            await timed("scan-10k", 10_000, "scan")
            extra["cb_sweep"] += await run.callbacks_beside(100_000)
            extra["cb_idle"] += await run.callbacks_beside(None)
            # Each update moves the rows to the state they are not in: 20,000 changes each.
            times.setdefault("update-fresh", []).append(await run.bulk_update(False, "lost"))
            after_small = await run.bulk_update(True, "succeeded")
            times.setdefault("update-after-small", []).append(after_small)
            times.setdefault("touch-one", []).append(await run.one_row(1, finish=False))
            times.setdefault("finish-one", []).append(await run.one_row(1))
            times.setdefault("finish-after-bulk", []).append(await run.one_row(UPDATE_ROWS))
        await run.reset(10_000)
        print(f"  due ids: {await run.plan()}", file=sys.stderr)
    finally:
        await run.database.dispose()
    return times, extra


async def fresh_postgres(url: str) -> None:
    parsed = make_url(url)
    admin = create_async_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{parsed.database}"')
        await conn.exec_driver_sql(f'CREATE DATABASE "{parsed.database}"')
    await admin.dispose()


COLUMNS = (
    "small-0",
    "big-0",
    "scan-0",
    "small-10k",
    "nolog-10k",
    "big-10k",
    "nolog-100k",
    "big-100k",
    "was-10k",
    "was-100k",
    "scan-10k",
    "update-fresh",
    "update-after-small",
    "touch-one",
    "finish-one",
    "finish-after-bulk",
)
RATIOS = (
    ("big-0", "small-0", ""),
    ("scan-0", "big-0", ""),
    ("big-10k", "small-10k", ""),
    ("big-100k", "big-10k", ""),
    ("scan-10k", "big-10k", ""),
    ("big-10k", "nolog-10k", "the change log's cost"),
    ("big-100k", "nolog-100k", "the change log's cost"),
    ("big-10k", "was-10k", "after / before 0005"),
    ("big-100k", "was-100k", "after / before 0005"),
    ("update-after-small", "update-fresh", "<= 1.5"),
    ("finish-one", "touch-one", "a finish's triggers"),
    ("finish-after-bulk", "finish-one", "the bulk's cached plans"),
)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def table(results: dict[str, Results], extra: dict[str, dict[str, Any]]) -> str:
    med = {db: {k: statistics.median(v) for k, v in t.items()} for db, t in results.items()}
    lines = [
        "| scenario | " + " | ".join(f"{db} median (runs), ms" for db in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    for name in COLUMNS:
        cells = [
            f"{ms(med[db][name])} (" + " ".join(ms(x) for x in results[db][name]) + ")"
            if name in results[db]
            else "-"
            for db in results
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    rule = "|---|" + "---|" * len(results) + "---|"
    lines += ["", "| ratio | " + " | ".join(results) + " | target |", rule]
    for top, bottom, target in RATIOS:
        cells = [
            f"{med[db][top] / med[db][bottom]:.2f}" if bottom in med[db] else "-" for db in results
        ]
        lines.append(f"| {top} / {bottom} | " + " | ".join(cells) + f" | {target} |")
    lines += ["", "| writer and callbacks | " + " | ".join(results) + " | target |", rule]
    rows = [
        ("big-100k: transactions", lambda e: str(len(e["holds"])), ""),
        ("big-100k: longest transaction, ms", lambda e: ms(max(e["holds"])), "<= 250"),
        ("big-100k: median transaction, ms", lambda e: ms(statistics.median(e["holds"])), ""),
        (
            "callbacks without a sweep: p50 / p99 / max, ms",
            lambda e: " / ".join(ms(percentile(e["cb_idle"], q)) for q in (0.5, 0.99, 1.0)),
            "",
        ),
        (
            "callbacks during big-100k: p50 / p99 / max, ms",
            lambda e: " / ".join(ms(percentile(e["cb_sweep"], q)) for q in (0.5, 0.99, 1.0)),
            "p99 near the one without",
        ),
    ]
    for label, cell, target in rows:
        lines.append(
            f"| {label} | " + " | ".join(cell(extra[db]) for db in results) + f" | {target} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", help="a PostgreSQL URL; the database is dropped and made")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args()
    minimum = MAX_DUE + IN_FLIGHT + ALREADY_STALE + UPDATE_ROWS + SMALL_UPDATES
    if args.rows < max(2 * MAX_DUE, minimum):
        parser.error(f"--rows must be at least {max(2 * MAX_DUE, minimum)}")

    load_before = os.getloadavg()
    results: dict[str, Results] = {}
    extra: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/sweep.db"
        print("SQLite:", file=sys.stderr)
        await asyncio.to_thread(upgrade, url)
        results["SQLite"], extra["SQLite"] = await bench(url, args.rows, args.repeat)
    if args.postgres:
        print("PostgreSQL:", file=sys.stderr)
        await fresh_postgres(args.postgres)
        await asyncio.to_thread(upgrade, args.postgres)
        results["PostgreSQL"], extra["PostgreSQL"] = await bench(
            args.postgres, args.rows, args.repeat
        )
    load_after = os.getloadavg()

    command = "python benchmarks/sweep.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:] if "://" not in a
    )
    if args.postgres:
        command = command.replace("--postgres", "--postgres postgresql+asyncpg://HOST/DB")
    load = " / ".join(" ".join(f"{x:.2f}" for x in avg) for avg in (load_before, load_after))
    report = (
        f"### Stale sweep ({args.rows:,} jobs)\n\n"
        f"{datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores, {platform.platform()}, load "
        f"average (1, 5, 15 min) before / after: {load}. Median of {args.repeat} (each run in "
        "parentheses); a sweep is every chunk of `sweep_stale_jobs`, each committed.\n\n"
        f"{table(results, extra)}\n\nCommand: `{command}`\n"
    )
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    asyncio.run(main())
