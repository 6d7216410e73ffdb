"""Benchmark (issue 20): the console's overview and a filtered job list at 1,000,000 jobs with
24 h of changes, as a ratio to the same queries run directly.

`tracker serve` runs in a process of its own (one uvicorn worker); a client signs in through the
login form as a browser does and fetches the pages over loopback HTTP. The baseline runs, in this
process with the same driver, the very statements each page runs: for the overview the counts,
the oldest unfinished job, the four hourly rollups, the scheduler's heartbeats and the change
log's head; for the list the page query of `GET /jobs` (tracker.api.queries). Rounds interleave
both sides so that the load of a shared machine hits both. Targets: page p50 within 2x of the
direct queries, the overview's p50 under 100 ms.

    python benchmarks/console.py                       # SQLite in a temporary directory
    python benchmarks/console.py --database-url postgresql+asyncpg://user@host/db
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import synthetic
from common import free_port, percentile
from sqlalchemy import func, select, text

from tracker.api import queries
from tracker.api.queries import JobFilter
from tracker.config import Settings
from tracker.console import rollups
from tracker.console.overview import METRICS
from tracker.db import Database, upgrade
from tracker.models import Job, JobChange
from tracker.notify.changes import latest_seq
from tracker.scheduler.heartbeats import scheduler_status

TOKEN = "bench-console-token-0123456789"
LIST = JobFilter(states=("failed",), types=("AIVideoTag",))
LIST_PATH = "/ui/jobs?state=failed&type=AIVideoTag"
COMMAND = "python benchmarks/console.py"
CHANGES_PER_HOUR = 10_000  # 24 h of changes: 240,000 rows in the change log's last day


async def ensure_data(url: str, count: int) -> str:
    """`count` synthetic jobs, and 24 h of finished-job changes, callbacks and deliveries
    written through the tables' triggers (so the rollups are built as in production)."""
    database = Database(url)
    try:
        async with database.session() as session:
            present = await session.scalar(select(func.count()).select_from(Job))
            recent = await session.scalar(
                select(func.count())
                .select_from(JobChange)
                .where(JobChange.occurred_at >= datetime.now(UTC) - timedelta(hours=24))
            )
        if present == count and recent and recent >= CHANGES_PER_HOUR * 23:
            return f"reused {count:,} jobs and {recent:,} changes of the last 24 h"
        async with database.write() as session:
            for table in ("delivery_attempts", "deliveries", "subscriptions", "callback_events"):
                await session.execute(text(f"DELETE FROM {table}"))
            await session.execute(text("DELETE FROM job_changes"))
            await session.execute(text("DELETE FROM jobs"))
            await session.execute(text("DELETE FROM console_rollups"))
        start = time.perf_counter()
        await synthetic.generate_jobs(database, count)
        seeded = time.perf_counter() - start
        start = time.perf_counter()
        await _last_day(database, count)
        return (
            f"generated {count:,} jobs in {seeded:.0f} s, then 24 h of changes "
            f"({CHANGES_PER_HOUR * 24:,}) and callbacks in {time.perf_counter() - start:.0f} s"
        )
    finally:
        await database.dispose()


async def _last_day(database: Database, count: int) -> None:
    """Changes of the last 24 h (as the transitions' triggers would write them), and a
    callback each: inserted in hourly chunks, each chunk one statement per table."""
    now = datetime.now(UTC)
    for hour in range(24):
        first = hour * CHANGES_PER_HOUR + 1
        last = first + CHANGES_PER_HOUR - 1
        start = now - timedelta(hours=24 - hour)
        async with database.write() as session:
            if database.is_sqlite:
                series = (
                    "WITH RECURSIVE s(n) AS (SELECT :first UNION ALL SELECT n + 1 FROM s "
                    "WHERE n < :last) "
                )
                # SQLAlchemy's text form of a UTC time: 'YYYY-MM-DD HH:MM:SS.ffffff'
                when = "strftime('%Y-%m-%d %H:%M:%S', :start, '+' || (n % 3600) || ' seconds')"
                when += " || '.000000'"
                source = "FROM s"
                params: dict[str, Any] = {
                    "first": first,
                    "last": last,
                    "start": start.strftime("%Y-%m-%d %H:%M:%S"),
                }
            else:
                series = ""
                when = "(CAST(:start AS timestamptz) + make_interval(secs => n % 3600))"
                source = "FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) n"
                params = {"first": first, "last": last, "start": start}
            state = "CASE WHEN n % 5 = 0 THEN 'failed' ELSE 'succeeded' END"
            await session.execute(
                text(
                    f"{series}INSERT INTO job_changes (type, job_row_id, job_id, media_id, "
                    "previous_state, state, occurred_at, data) "
                    f"SELECT 'job.' || {state}, (n % :jobs) + 1, 'job-' || ((n % :jobs) + 1), "
                    f"'media-' || n, 'processing', {state}, {when}, '{{}}' {source}"
                ),
                {**params, "jobs": count},
            )
            await session.execute(
                text(
                    f"{series}INSERT INTO callback_events (dedup_key, event_type, job_id, "
                    "media_id, status, body, headers, received_at, deliveries, applied, reason) "
                    "SELECT 'bench-' || n, 'AIVideoTagComplete', 'job-' || n, 'media-' || n, "
                    f"'success', '{{}}', '{{}}', {when}, CASE WHEN n % 10 = 0 THEN 2 ELSE 1 END, "
                    "true, 'applied' "
                    f"{source}"
                ),
                params,
            )
    async with database.writer.connect() as conn:
        await conn.execute(text("ANALYZE"))
        await conn.commit()


def start_server(url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")},
        "TRACKER_DATABASE_URL": url,
        "TRACKER_HOST": "127.0.0.1",
        "TRACKER_PORT": str(port),
        "TRACKER_API_TOKENS": TOKEN,
        "TRACKER_SCHEDULER": "off",  # nothing writes while the pages are measured
        "TRACKER_NOTIFY": "off",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "tracker", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            break
        time.sleep(0.2)
    server.kill()
    raise SystemExit("tracker serve did not become ready")


async def signed_in(base: str) -> httpx.AsyncClient:
    http = httpx.AsyncClient(base_url=base, timeout=60)
    form = await http.get("/ui/login")
    found = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert found is not None
    answer = await http.post(
        "/ui/login", data={"csrf_token": found.group(1), "token": TOKEN, "next": "/ui/"}
    )
    if answer.status_code != 303:
        raise SystemExit(f"sign-in failed: HTTP {answer.status_code}")
    return http


class Scenario:
    def __init__(self, name: str, path: str, direct: Callable[[Any], Awaitable[Any]]) -> None:
        self.name, self.path, self.direct = name, path, direct
        self.page: list[float] = []
        self.db: list[float] = []
        # CPU seconds per request: the server process's, and this process's for the direct
        # queries. On a machine shared by other sessions, waiting for a core stretches both
        # latencies by the machine's load; the CPU each side spends does not.
        self.page_cpu = 0.0
        self.db_cpu = 0.0


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(args: argparse.Namespace, url: str) -> list[str]:
    note = await ensure_data(url, args.jobs)
    database = Database(url)
    settings = Settings(database_url=url, scheduler="off")
    server, base = start_server(url)
    try:
        http = await signed_in(base)

        async def overview(session: Any) -> Any:
            now = datetime.now(UTC)
            hours = rollups.last_hours(now)
            await rollups.job_counts(session)
            await rollups.oldest_unfinished(session)
            await rollups.hourly_metrics(session, METRICS, hours[0])
            await scheduler_status(session, settings, now)
            return await latest_seq(session)

        async def job_list(session: Any) -> Any:
            await queries.list_jobs(session, LIST, limit=50)
            return await latest_seq(session)

        scenarios = [
            Scenario("overview `/ui/`", "/ui/", overview),
            Scenario(f"list `{LIST_PATH}`", LIST_PATH, job_list),
        ]
        for scenario in scenarios:  # warm both sides: pools, templates, the planner
            for _ in range(5):
                await _page(http, scenario.path)
                async with database.session() as session:
                    await scenario.direct(session)
        for _ in range(args.rounds):
            for scenario in scenarios:
                used = cpu_of(server.pid)
                for _ in range(args.requests):
                    scenario.page.append(await _page(http, scenario.path))
                scenario.page_cpu += cpu_of(server.pid) - used
                for _ in range(args.requests):
                    start, used = time.perf_counter(), time.process_time()
                    async with database.session() as session:
                        await scenario.direct(session)
                    scenario.db.append(time.perf_counter() - start)
                    scenario.db_cpu += time.process_time() - used
        await http.aclose()
    finally:
        server.terminate()
        server.wait(15)
        await database.dispose()
    lines = _table(url, note, scenarios, args)
    if args.trigger_rounds:
        lines += await trigger_cost(url, args.trigger_rounds)
    return lines


TRIGGER_ROWS = 100_000


async def trigger_cost(url: str, rounds: int) -> list[str]:
    """What the console's triggers add to the writers: a sweep-like UPDATE of 100,000 jobs'
    stale flag and an inbox-like INSERT of 10,000 callbacks, each in a transaction rolled back,
    with the console's triggers and without them (dropped inside that transaction)."""
    postgres = url.startswith("postgresql")
    names = CONSOLE_TRIGGERS_PG if postgres else CONSOLE_TRIGGERS_SQLITE
    database = Database(url)
    timings: dict[tuple[str, bool], list[float]] = {}
    statements = {
        "UPDATE of 100,000 jobs' stale flag": (
            f"UPDATE jobs SET stale = NOT stale, updated_at = updated_at WHERE id <= {TRIGGER_ROWS}"
        ),
        "INSERT of 10,000 callbacks": (
            "INSERT INTO callback_events (dedup_key, event_type, job_id, media_id, status, body, "
            "headers, received_at, deliveries, applied, reason) SELECT 'cost-' || job_id, "
            "'AIVideoTagComplete', job_id, media_id, 'success', '{}', '{}', updated_at, 1, "
            "true, 'applied' FROM jobs WHERE id <= 10000"
        ),
    }
    try:
        for _ in range(rounds):
            for name, sql in statements.items():
                for with_console in (True, False):
                    async with database.writer.connect() as conn:
                        transaction = await conn.begin()
                        if not with_console:
                            for trigger, table in names:
                                drop = f"DROP TRIGGER {trigger}" + (
                                    f" ON {table}" if postgres else ""
                                )
                                await conn.execute(text(drop))
                        start = time.perf_counter()
                        await conn.execute(text(sql))
                        timings.setdefault((name, with_console), []).append(
                            time.perf_counter() - start
                        )
                        await transaction.rollback()
    finally:
        await database.dispose()
    lines = [
        "| statement (rolled back) | with the console's triggers, median ms | without | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name in statements:
        with_, without = (sorted(timings[(name, flag)])[rounds // 2] for flag in (True, False))
        lines.append(f"| {name} | {_ms(with_)} | {_ms(without)} | {with_ / without:.2f} |")
    return [*lines, ""]


CONSOLE_TRIGGERS_SQLITE = [
    (name, "")
    for name in (
        "trg_console_jobs_update",
        "trg_console_changes",
        "trg_console_callbacks_insert",
        "trg_console_callbacks_repeat",
    )
]
CONSOLE_TRIGGERS_PG = [
    ("trg_jobs_console_counts_update", "jobs"),
    ("trg_job_changes_console", "job_changes"),
    ("trg_callback_events_console_insert", "callback_events"),
    ("trg_callback_events_console_update", "callback_events"),
]


async def _page(http: httpx.AsyncClient, path: str) -> float:
    start = time.perf_counter()
    response = await http.get(path)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise SystemExit(f"{path}: HTTP {response.status_code} {response.text[:200]}")
    return elapsed


def _ms(value: float) -> str:
    return f"{value * 1000:.1f}"


def _table(url: str, note: str, scenarios: list[Scenario], args: argparse.Namespace) -> list[str]:
    backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    lines = [
        f"### {backend}: console pages on {args.jobs:,} jobs with 24 h of changes",
        "",
        f"{note}; {args.rounds} interleaved rounds of {args.requests}; load average before: "
        f"{args.load}, after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
        "| page | page p50 ms | page p99 ms | direct p50 ms | direct p99 ms | p50 ratio "
        "| targets | CPU ms per page / direct |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for s in scenarios:
        p50, p99 = percentile(s.page, 0.5), percentile(s.page, 0.99)
        d50, d99 = percentile(s.db, 0.5), percentile(s.db, 0.99)
        ratio = p50 / d50
        verdict = f"ratio <= 2: {'met' if ratio <= 2 else 'missed'}"
        if "overview" in s.name:
            verdict += f"; p50 < 100 ms: {'met' if p50 < 0.1 else 'missed'}"
        cpu = f"{_ms(s.page_cpu / len(s.page))} / {_ms(s.db_cpu / len(s.db))}"
        lines.append(
            f"| {s.name} | {_ms(p50)} | {_ms(p99)} | {_ms(d50)} | {_ms(d99)} | {ratio:.2f} "
            f"| {verdict} | {cpu} |"
        )
    lines.append("")
    return lines


def public_args(args: list[str]) -> list[str]:
    temp = tempfile.gettempdir()
    return [re.sub(rf"{re.escape(temp)}/[^/]+", "<tmp>", arg) for arg in args]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", action="append", dest="urls")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50, help="per page, side and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trigger-rounds", type=int, default=5, help="0: skip that part")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    args.load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        urls = args.urls or [f"sqlite+aiosqlite:///{tmp}/console.db"]
        lines = [
            f"## Console pages ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
            "",
            f"cores: {os.cpu_count()}; "
            f"command: `{COMMAND} {shlex.join(public_args(sys.argv[1:]))}`",
            "",
        ]
        for url in urls:
            upgrade(url)
            lines += asyncio.run(run(args, url))
    report = "\n".join(lines)
    print(report)
    if args.output:
        args.output.write_text(report + "\n")


if __name__ == "__main__":
    main()
