"""Benchmark 3 (issue 8): the status API on 1,000,000 jobs against the same queries run directly.

For each of GET /jobs/{id}, the first and the 100th page of a filtered list, and GET /stats, it
measures p50/p99 over real HTTP to `tracker serve` (one uvicorn worker, a separate process) and
p50/p99 of the same SQL statement executed directly with the same driver (SQLAlchemy Core, no
HTTP, no ORM, no JSON). /stats is served from a per-process cache (see tracker.api.queries), so its
baseline is the uncached computation. Sides are interleaved in rounds so that background load
on a shared machine hits both. Prints a Markdown table; --output also writes it to a file.

    python benchmarks/status_api.py                       # SQLite in a temporary directory
    python benchmarks/status_api.py --database-url postgresql+asyncpg://user@host/db
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import synthetic
from sqlalchemy import func, select, text

from tracker.api import queries
from tracker.api.queries import Cursor, JobFilter
from tracker.db import Database, upgrade
from tracker.models import Job

FILTER = JobFilter(states=("processing",), types=("AIVideoTag",))
FILTER_QUERY = "state=processing&type=AIVideoTag"
PAGE = 50
COMMAND = "python benchmarks/status_api.py"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def ensure_jobs(url: str, count: int) -> str:
    database = Database(url)
    try:
        async with database.session() as session:
            present = await session.scalar(select(func.count()).select_from(Job))
        if present == count:
            return f"reused {count:,} jobs already in the database"
        async with database.write() as session:
            await session.execute(text("DELETE FROM callback_events"))
            await session.execute(text("DELETE FROM jobs"))
        start = time.perf_counter()
        await synthetic.generate_jobs(database, count)
        return f"generated {count:,} jobs in {time.perf_counter() - start:.1f} s"
    finally:
        await database.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")},
        "TRACKER_DATABASE_URL": url,
        "TRACKER_HOST": "127.0.0.1",
        "TRACKER_PORT": str(port),
        # No sweeper or reconciler writing to the table while it is being measured.
        "TRACKER_SCHEDULER": "off",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "tracker", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
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


class Scenario:
    def __init__(
        self, name: str, path: str, direct: Callable[[Any], Awaitable[Any]] | None
    ) -> None:
        self.name, self.path, self.direct = name, path, direct
        self.api: list[float] = []
        self.db: list[float] = []


async def run(args: argparse.Namespace, url: str) -> list[str]:
    note = await ensure_jobs(url, args.jobs)
    database = Database(url)
    server, base = start_server(url)
    rng = random.Random(7)
    try:
        http = httpx.AsyncClient(base_url=base, timeout=30)
        # The cursor of page 100, from walking the first 99 pages.
        page100 = ""
        for _ in range(99):
            more = f"&cursor={page100}" if page100 else ""
            response = await http.get(f"/jobs?{FILTER_QUERY}&limit={PAGE}{more}")
            page100 = response.json()["next_cursor"] or ""
            if not page100:
                raise SystemExit(f"fewer than 100 pages of {FILTER_QUERY}: use more --jobs")
        after = Cursor.decode(page100, FILTER)

        async def one_job(conn: Any) -> Any:
            job_id = f"job-{rng.randint(1, args.jobs)}"
            return (await conn.execute(select(Job).where(Job.job_id == job_id))).all()

        async def first_page(conn: Any) -> Any:
            return (await conn.execute(queries.list_statement(FILTER, PAGE, None))).all()

        async def hundredth_page(conn: Any) -> Any:
            return (await conn.execute(queries.list_statement(FILTER, PAGE, after))).all()

        async def stats(conn: Any) -> Any:
            async with database.session() as session:
                return await queries.compute_stats(session, datetime.now(UTC))

        scenarios = [
            # No database at all: the floor of HTTP, uvicorn and the client on this machine.
            Scenario("GET /healthz (HTTP floor)", "/healthz", None),
            Scenario("GET /jobs/{id}", "/jobs/job-{n}", one_job),
            Scenario(f"GET /jobs?{FILTER_QUERY} first page", f"/jobs?{FILTER_QUERY}", first_page),
            Scenario(
                f"GET /jobs?{FILTER_QUERY} page 100",
                f"/jobs?{FILTER_QUERY}&cursor={page100}",
                hundredth_page,
            ),
            Scenario("GET /stats", "/stats", stats),
        ]
        for scenario in scenarios:  # warm both sides: caches, pools, the planner
            for _ in range(5):
                await _api(http, scenario, rng, args.jobs)
            if scenario.direct is not None:
                async with database.engine.connect() as conn:
                    await scenario.direct(conn)
        for _ in range(args.rounds):
            for scenario in scenarios:
                n_direct = args.stats_requests if scenario.name == "GET /stats" else args.requests
                for _ in range(args.requests):
                    scenario.api.append(await _api(http, scenario, rng, args.jobs))
                if scenario.direct is None:
                    continue
                async with database.engine.connect() as conn:
                    for _ in range(n_direct):
                        start = time.perf_counter()
                        await scenario.direct(conn)
                        scenario.db.append(time.perf_counter() - start)
        await http.aclose()
    finally:
        server.terminate()
        server.wait(15)
        await database.dispose()
    return _table(url, note, scenarios, args)


async def _api(
    http: httpx.AsyncClient, scenario: Scenario, rng: random.Random, count: int
) -> float:
    path = scenario.path.replace("{n}", str(rng.randint(1, count)))
    start = time.perf_counter()
    response = await http.get(path)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise SystemExit(f"{path}: HTTP {response.status_code} {response.text[:200]}")
    return elapsed


def _ms(value: float) -> str:
    return f"{value * 1000:.2f}"


def _table(url: str, note: str, scenarios: list[Scenario], args: argparse.Namespace) -> list[str]:
    backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    lines = [
        f"### {backend}: status API on {args.jobs:,} jobs",
        "",
        f"{note}; {args.rounds} interleaved rounds; load average before: {args.load}",
        "",
        "| request | API p50 ms | API p99 ms | direct p50 ms | direct p99 ms "
        "| p50 ratio | p99 ratio | n API / direct |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scenarios:
        api50, api99 = percentile(s.api, 0.5), percentile(s.api, 0.99)
        if not s.db:
            lines.append(f"| {s.name} | {_ms(api50)} | {_ms(api99)} | | | | | {len(s.api)} / 0 |")
            continue
        db50, db99 = percentile(s.db, 0.5), percentile(s.db, 0.99)
        lines.append(
            f"| {s.name} | {_ms(api50)} | {_ms(api99)} | {_ms(db50)} | {_ms(db99)} "
            f"| {api50 / db50:.2f} | {api99 / db99:.2f} | {len(s.api)} / {len(s.db)} |"
        )
    spread = {s.name: statistics.pstdev(s.api) / statistics.mean(s.api) for s in scenarios}
    noisy = [name for name, cv in spread.items() if cv > 0.5]
    if noisy:
        lines += ["", f"noisy (API latency stdev > 50% of mean): {', '.join(noisy)}"]
    lines.append("")
    return lines


def public_args(args: list[str]) -> list[str]:
    """The arguments as anyone can rerun them: a SQLite file in a temporary folder of this
    machine becomes `<tmp>`."""
    temp = tempfile.gettempdir()
    return [re.sub(rf"{re.escape(temp)}/[^/]+", "<tmp>", arg) for arg in args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", action="append", dest="urls")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=100, help="per scenario and round")
    parser.add_argument("--stats-requests", type=int, default=3, help="direct /stats per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    args.load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        urls = args.urls or [f"sqlite+aiosqlite:///{tmp}/bench.db"]
        lines = [
            f"## Benchmark 3: status API ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
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
