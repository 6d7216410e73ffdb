"""Run every benchmark on SQLite and PostgreSQL and write one Markdown report.

    python benchmarks/run.py                  # full sizes; starts a throwaway PostgreSQL
    python benchmarks/run.py --quick          # small sizes, to check that everything runs (prints)
    python benchmarks/run.py --postgres postgresql+asyncpg://user@host/db   # use your server

Each benchmark measures its own baseline in the same run and prints a Markdown section; this
script runs them one after the other (never in parallel: they would measure each other), adds
the date, machine and commit, and writes benchmarks/RESULTS.md (or --output).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def benchmarks(postgres: str, quick: bool) -> list[list[str]]:
    """The commands, each a script of this folder and its arguments."""
    names = ("ingest", "api", "sweep", "notify", "turns", "recording", "due", "mns", "console")
    db = {name: f"{postgres.rsplit('/', 1)[0]}/bench_{name}" for name in names}
    if quick:
        return [
            ["ingest.py", "--postgres-url", db["ingest"], "--duration", "3", "--rounds", "1"],
            ["submit.py", "--count", "500", "--limited-count", "150", "--runs", "1"],
            [
                "status_api.py",
                "--database-url",
                "sqlite+aiosqlite:///{tmp}/api.db",
                "--database-url",
                db["api"],
                "--jobs",
                "120000",  # the smallest with 100 pages of its filtered query
                "--requests",
                "20",
                "--rounds",
                "1",
            ],
            ["sweep.py", "--postgres", db["sweep"], "--rows", "200000", "--repeat", "1"],
            ["memory.py", "--callbacks", "2000"],
            ["notify.py", "--postgres-url", db["notify"], "--quick"],
            ["turns.py", "--postgres-url", db["turns"], "--seconds", "3"],
            ["recording.py", "--postgres-url", db["recording"], "--rounds", "1"],
            ["due.py", "--postgres-url", db["due"], "--history", "100000"],
            ["mns.py", "--postgres-url", db["mns"], "--messages", "2000", "--rounds", "1"],
            [
                "console.py",
                "--database-url",
                "sqlite+aiosqlite:///{tmp}/console.db",
                "--database-url",
                db["console"],
                "--jobs",
                "20000",
                "--requests",
                "10",
                "--rounds",
                "1",
            ],
        ]
    return [
        ["ingest.py", "--postgres-url", db["ingest"]],
        ["submit.py"],
        [
            "status_api.py",
            "--database-url",
            "sqlite+aiosqlite:///{tmp}/api.db",
            "--database-url",
            db["api"],
        ],
        ["sweep.py", "--postgres", db["sweep"]],
        ["memory.py"],
        ["notify.py", "--postgres-url", db["notify"]],
        ["turns.py", "--postgres-url", db["turns"]],
        ["turns.py", "--postgres-url", db["turns"], "--subscribe"],
        ["recording.py", "--postgres-url", db["recording"]],
        ["due.py", "--postgres-url", db["due"]],
        ["mns.py", "--postgres-url", db["mns"]],
        [
            "console.py",
            "--database-url",
            "sqlite+aiosqlite:///{tmp}/console.db",
            "--database-url",
            db["console"],
        ],
    ]


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = f"/tmp/tracker-bench-pg-{os.getpid()}"
    script = str(ROOT / ".ci" / "postgres")
    url = subprocess.run(
        ["bash", script, "start", folder, str(port)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield url
    finally:
        subprocess.run(["bash", script, "stop", folder], check=False)


async def create_databases(url: str, names: list[str]) -> None:
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def header(argv: list[str]) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        "# Benchmark results\n\n"
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, {memory:.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}\n"
        f"- commit: {commit or 'unknown'}\n"
        f"- command: `{shlex.join(['python', 'benchmarks/run.py', *argv])}`\n\n"
        "Every figure is measured against a baseline in the same run on the same machine; "
        "ratios are the result, raw numbers are for context. Differences under about 15% "
        "between single runs are noise on this machine.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="a PostgreSQL URL whose server may get new databases")
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--output", type=Path, help="default: RESULTS.md, or nothing with --quick")
    args = parser.parse_args()
    output = args.output or (None if args.quick else HERE / "RESULTS.md")

    server = nullcontext(args.postgres) if args.postgres else throwaway_postgres()
    with server as pg, tempfile.TemporaryDirectory() as tmp:
        commands = benchmarks(pg, args.quick)
        names = [a.rsplit("/", 1)[1] for c in commands for a in c if a.startswith("postgresql")]
        asyncio.run(create_databases(pg, names))
        sections = [header(sys.argv[1:])]
        for script, *rest in commands:
            argv = [a.replace("{tmp}", tmp) for a in rest]
            print(f"== {script} {shlex.join(argv)}", file=sys.stderr, flush=True)
            started = time.monotonic()
            result = subprocess.run(
                [sys.executable, str(HERE / script), *argv],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            took = time.monotonic() - started
            if result.returncode != 0:
                sections.append(
                    f"\n## {script}: FAILED (exit {result.returncode})\n\n```\n"
                    f"{result.stderr[-3000:]}\n```\n"
                )
            else:
                sections.append(f"\n## {script}\n\n{result.stdout.strip()}\n")
            print(f"   {took:.0f}s, exit {result.returncode}", file=sys.stderr, flush=True)
    if output is None:
        print("".join(sections))
        return
    output.write_text("".join(sections))
    print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
