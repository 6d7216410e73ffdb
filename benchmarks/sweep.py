"""Benchmark 4: the stale sweep should cost what the due rows cost, not what the table costs.

Runs the real `flag_stale_jobs` (one UPDATE, committed) on SQLite and, with --postgres, on
PostgreSQL, against tables built like production: mostly finished jobs, some in flight, some
already stale. Scenarios (name: table rows, due rows), timed --repeat times, interleaved:

  small-0     100,000, none due      a sweep that finds nothing, the usual case
  big-0       1,000,000, none due
  scan-0      big-0 with indexes disabled: what a table-proportional sweep costs
  small-10k   100,000, 10,000 due    (the control table holds only the old candidates)
  big-10k     1,000,000, 10,000 due
  big-100k    1,000,000, 100,000 due
  scan-10k    big-10k with indexes disabled

Finding the due rows should cost the same on both tables (big-0 / small-0 near 1, far below
scan-0); writing them grows with the due rows (big-100k / big-10k near 10).

    python benchmarks/sweep.py [--postgres postgresql+asyncpg://...] [--rows 1000000] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tracker.config import Settings
from tracker.db import Database, upgrade
from tracker.scheduler.sweep import flag_stale_jobs, stale_sweep

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SETTINGS_KW = {"stale_after": timedelta(hours=1)}
MAX_DUE = 100_000  # ids 1..MAX_DUE are old; the first `due` of them are unfinished
IN_FLIGHT = 10_000  # unfinished, submitted in the last 30 minutes: not due
ALREADY_STALE = 5_000  # unfinished and flagged earlier: not due again


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
    submitted = (
        f"CASE WHEN {n} <= {MAX_DUE} THEN {seconds(f'{n} % 3600', old)} "
        f"WHEN {n} <= {fresh} THEN {seconds(f'{n} % 1800', recent)} "
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


async def reset(database: Database, due: int) -> None:
    """Make ids 1..due unfinished and unflagged, the other old candidates finished."""
    async with database.writer.begin() as conn:
        await conn.execute(
            text(
                "UPDATE jobs SET stale = false, stale_at = NULL, state = CASE WHEN id <= :due "
                "THEN 'processing' ELSE 'succeeded' END WHERE id <= :max"
            ),
            {"due": due, "max": MAX_DUE},
        )
    if not database.is_sqlite:
        async with database.engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.exec_driver_sql("VACUUM ANALYZE jobs")


async def sweep_once(database: Database, due: int, *, indexed: bool = True) -> float:
    await reset(database, due)
    settings = Settings(database_url=str(database.url), **SETTINGS_KW)  # type: ignore[arg-type]
    started = time.perf_counter()
    if indexed:
        async with database.write() as session:
            flagged = await flag_stale_jobs(session, settings, NOW)
    else:
        statement = stale_sweep(settings, NOW)
        async with database.write() as session:
            if database.is_sqlite:
                sql = str(
                    statement.compile(
                        dialect=database.writer.dialect, compile_kwargs={"literal_binds": True}
                    )
                ).replace("UPDATE jobs ", "UPDATE jobs NOT INDEXED ", 1)
                result = await session.execute(text(sql))
            else:
                await session.execute(text("SET LOCAL enable_indexscan = off"))
                await session.execute(text("SET LOCAL enable_bitmapscan = off"))
                result = await session.execute(statement)
            flagged = result.rowcount  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - started
    if flagged != due:
        raise SystemExit(f"sweep flagged {flagged} rows, expected {due}")
    return elapsed


async def plan(database: Database) -> str:
    settings = Settings(database_url=str(database.url), **SETTINGS_KW)  # type: ignore[arg-type]
    statement = stale_sweep(settings, NOW)
    async with database.engine.connect() as conn:
        if database.is_sqlite:
            sql = statement.compile(
                dialect=database.engine.dialect, compile_kwargs={"literal_binds": True}
            )
            rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")
            return "; ".join(str(r[-1]) for r in rows)
        compiled = statement.compile(dialect=database.engine.dialect)
        params = tuple(compiled.params[name] for name in compiled.positiontup or ())
        rows = await conn.exec_driver_sql(f"EXPLAIN {compiled}", params)
        return "; ".join(r[0].strip() for r in rows)


async def fill(database: Database, first: int, last: int, chunk: int = 200_000) -> None:
    for start in range(first, last + 1, chunk):
        end = min(last, start + chunk - 1)
        async with database.writer.begin() as conn:
            await conn.exec_driver_sql(populate_sql(start, end, database.is_sqlite))


async def bench(url: str, rows: int, repeat: int) -> dict[str, list[float]]:
    database = Database(url, sqlite_synchronous="NORMAL")
    times: dict[str, list[float]] = {}

    async def run(name: str, due: int, *, indexed: bool = True) -> None:
        times.setdefault(name, []).append(await sweep_once(database, due, indexed=indexed))

    try:
        print(f"  filling {MAX_DUE:,} rows ...", file=sys.stderr)
        await fill(database, 1, MAX_DUE)  # the control table: the old candidates only
        for _ in range(repeat):
            await run("small-0", 0)
            await run("small-10k", 10_000)
        print(f"  filling to {rows:,} rows ...", file=sys.stderr)
        await fill(database, MAX_DUE + 1, rows)
        for _ in range(repeat):
            await run("big-0", 0)
            await run("scan-0", 0, indexed=False)
            await run("big-10k", 10_000)
            await run("big-100k", 100_000)
            await run("scan-10k", 10_000, indexed=False)
        await reset(database, 10_000)
        print(f"  plan: {await plan(database)}", file=sys.stderr)
    finally:
        await database.dispose()
    return times


async def fresh_postgres(url: str) -> None:
    parsed = make_url(url)
    admin = create_async_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{parsed.database}"')
        await conn.exec_driver_sql(f'CREATE DATABASE "{parsed.database}"')
    await admin.dispose()


COLUMNS = ("small-0", "big-0", "scan-0", "small-10k", "big-10k", "big-100k", "scan-10k")
RATIOS = (
    ("big-0", "small-0"),
    ("scan-0", "big-0"),
    ("big-10k", "small-10k"),
    ("big-100k", "big-10k"),
    ("scan-10k", "big-10k"),
)


def table(results: dict[str, dict[str, list[float]]]) -> str:
    med = {db: {k: statistics.median(v) for k, v in t.items()} for db, t in results.items()}
    lines = [
        "| scenario | " + " | ".join(f"{db} median (runs), ms" for db in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    for name in COLUMNS:
        cells = [
            f"{med[db][name] * 1000:.1f} ("
            + " ".join(f"{x * 1000:.1f}" for x in results[db][name])
            + ")"
            for db in results
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| ratio | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for top, bottom in RATIOS:
        cells = [f"{med[db][top] / med[db][bottom]:.2f}" for db in results]
        lines.append(f"| {top} / {bottom} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", help="a PostgreSQL URL; the database is dropped and made")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args()
    if args.rows < 2 * MAX_DUE:
        parser.error(f"--rows must be at least {2 * MAX_DUE}")

    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/sweep.db"
        print("SQLite:", file=sys.stderr)
        await asyncio.to_thread(upgrade, url)
        results["SQLite"] = await bench(url, args.rows, args.repeat)
    if args.postgres:
        print("PostgreSQL:", file=sys.stderr)
        await fresh_postgres(args.postgres)
        await asyncio.to_thread(upgrade, args.postgres)
        results["PostgreSQL"] = await bench(args.postgres, args.rows, args.repeat)

    command = "python benchmarks/sweep.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:] if "://" not in a
    )
    if args.postgres:
        command = command.replace("--postgres", "--postgres postgresql+asyncpg://HOST/DB")
    report = (
        f"### Stale sweep ({args.rows:,} jobs)\n\n"
        f"{datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores, {platform.platform()}, "
        f"median of {args.repeat} (each run in parentheses), one UPDATE + commit each.\n\n"
        f"{table(results)}\n\nCommand: `{command}`\n"
    )
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    asyncio.run(main())
