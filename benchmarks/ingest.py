"""Benchmark 1, webhook ingest: signed, durable callbacks/s and latency against two baselines.

Drives three servers with the same wrk script (64 connections, one uvicorn worker each):
- `bare`: a Starlette endpoint that parses the same JSON and answers 200 (the ceiling);
- `single`: one SQLAlchemy Core INSERT + commit per request into `callback_events`, same driver
  (the database's single-row commit rate);
- `tracker`: the real `POST /callbacks/vod` with signature checks, group commit and the applier.
Runs are interleaved (bare, single, tracker) x rounds, on SQLite and on PostgreSQL when a URL is
given, and printed as a Markdown table of medians with ratios to `bare`, then every raw run.

    python benchmarks/ingest.py [--postgres-url postgresql+asyncpg://...] [--duration 10]
        [--job-ids random]   (VOD's JobIds are random: each event's job lands on a random page
                              of the indexes keyed by JobId; the default numbers them in order)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import count_rows, free_port, fresh_database, percentile

KEY = "BenchKey123"
CALLBACK_URL = "https://tracker.example.com/callbacks/vod"
TARGETS = ("bare", "single", "tracker")

LUA = r"""
local sigs = %(sigs)s
local counter = 0
function setup(thread)
  threads = (threads or 0) + 1
  thread:set("tid", threads)
end
function init(args)
  math.randomseed(os.time() * 64 + tid)
end
local function job_id()
  if %(random)s then  -- as VOD's: 32 hex digits, in no order
    return string.format("%%08x%%08x%%08x%%08x", math.random(0, 0x7fffffff),
      math.random(0, 0x7fffffff), math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
  end
  return string.format("%(run)s-%%d-%%d", tid, counter)
end
function request()
  counter = counter + 1
  local ts = os.time()
  local sig = sigs[ts] or sigs[%(first)d]
  local body = string.format('{"EventTime":"%%s","EventType":"AIVideoTagComplete",'
    .. '"JobId":"%%s","MediaId":"media%%d","Status":"success","Code":"0",'
    .. '"Message":"OK","Data":"{\\"Keyword\\":[{\\"Times\\":[\\"3260\\"],\\"Tag\\":\\"cat\\"}]}"}',
    os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", ts), job_id(), counter)
  return wrk.format("POST", "/callbacks/vod", {["Content-Type"] = "application/json",
    ["X-VOD-TIMESTAMP"] = tostring(ts), ["X-VOD-SIGNATURE"] = sig}, body)
end
function done(summary, latency, requests)
  io.write(string.format('RESULT {"requests":%%d,"duration_us":%%d,"non2xx":%%d,'
    .. '"socket_errors":%%d,"p50_us":%%d,"p99_us":%%d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


# --- the servers (run in a child process: `ingest.py serve TARGET URL PORT`) -----------------


def bare_app() -> object:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def receive(request: Request) -> Response:
        json.loads(await request.body())
        return Response(b'{"status":"stored"}', media_type="application/json")

    return Starlette(routes=[Route("/callbacks/vod", receive, methods=["POST"])])


def single_app(url: str) -> object:
    """One Core INSERT and commit per request: what a naive durable handler costs."""
    import hashlib
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    from sqlalchemy import insert
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from tracker.db import Database
    from tracker.ingest.pending import EVENTS

    state: dict[str, Database] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["db"] = Database(url, pool_size=64)
        yield
        await state["db"].dispose()

    async def receive(request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw)
        row = {
            "dedup_key": hashlib.sha256(raw).hexdigest(),
            "event_type": body["EventType"],
            "job_id": body["JobId"],
            "status": body["Status"],
            "body": raw.decode(),
            "headers": {},
            "received_at": datetime.now(UTC),
        }
        async with state["db"].writer.begin() as conn:
            await conn.execute(insert(EVENTS).values(row))
        return Response(b'{"status":"stored"}', media_type="application/json")

    return Starlette(routes=[Route("/callbacks/vod", receive, methods=["POST"])], lifespan=lifespan)


def serve(target: str, url: str, port: int) -> None:
    import uvicorn

    app: dict[str, Callable[[], Any]] = {"bare": bare_app, "single": lambda: single_app(url)}
    uvicorn.run(
        app[target](),
        host="127.0.0.1",
        port=port,
        workers=1,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
    )


def server_command(
    target: str, url: str, port: int, base: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The baselines run in this script; the tracker is `tracker serve`, as users run it
    (`base`: the tracker of another checkout, to compare a change with what it changes)."""
    root = str(Path(__file__).resolve().parent.parent)
    if target not in ("tracker", "base"):
        return [sys.executable, __file__, "serve", target, url, str(port)], {"PYTHONPATH": root}
    if target == "base":
        assert base is not None, "--base DIR names the other checkout"
        root = str(Path(base).resolve())
    env = {
        "TRACKER_DATABASE_URL": url,
        "TRACKER_PORT": str(port),
        "TRACKER_CALLBACK_URL": CALLBACK_URL,
        "TRACKER_CALLBACK_AUTH_KEY": KEY,
        "PYTHONPATH": root,
    }
    return [sys.executable, "-m", "tracker", "serve"], env


# --- the driver -------------------------------------------------------------------------------


@dataclass
class Run:
    db: str
    target: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int
    acked: int
    rows: int | None
    cpu_us: float  # the server process's CPU (user + system) per answered request
    load: float  # the machine's 1-minute load average as the measured run started


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


def lua_script(workdir: Path, run_id: str, random_ids: bool = False) -> Path:
    from tracker.vod import sign_callback

    now = int(time.time())
    sigs = ", ".join(
        f'[{ts}] = "{sign_callback(CALLBACK_URL, ts, KEY)}"' for ts in range(now - 5, now + 900)
    )
    path = workdir / f"{run_id}.lua"
    fields = {"sigs": "{" + sigs + "}", "first": now, "run": run_id}
    path.write_text(LUA % (fields | {"random": "true" if random_ids else "false"}))
    return path


def one_run(kind: str, target: str, rnd: int, args: argparse.Namespace, workdir: Path) -> Run:
    url = fresh_database(kind, args.postgres_url, workdir)
    run_id = f"{kind}{target}{rnd}{int(time.time())}"
    random_ids = args.job_ids == "random"
    warm_script = lua_script(workdir, run_id + "w", random_ids)
    script = lua_script(workdir, run_id, random_ids)
    command, env = server_command(target, url, args.port, args.base)
    server = subprocess.Popen(command, env={**os.environ, **env})
    spy = None
    try:
        wait_port(args.port)
        wrk = ["wrk", "-t2", f"-c{args.connections}", "--timeout", "10s"]
        base = f"http://127.0.0.1:{args.port}"
        warm = subprocess.run(
            [*wrk, "-s", str(warm_script), "-d2s", base], check=True, capture_output=True, text=True
        ).stdout
        if args.profile and target in ("tracker", "base"):
            spy = start_profile(server.pid, args, f"{target}-{kind}-{rnd}")
        cpu_before, load = cpu_seconds(server.pid), os.getloadavg()[0]
        out = subprocess.run(
            [*wrk, "-s", str(script), f"-d{args.duration}s", base],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        if target in ("tracker", "base"):  # the CPU of applying what was stored counts too
            asyncio.run(wait_applied(url))
        cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        if spy is not None:
            spy.wait(timeout=60)
        server.terminate()
        server.wait(timeout=60)
    result, warmed = _result(out), _result(warm)
    rows = None if target == "bare" else asyncio.run(count_rows(url))
    return Run(
        db=kind,
        target=target,
        round=rnd,
        rps=result["requests"] / (result["duration_us"] / 1e6),
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        non2xx=result["non2xx"],
        socket_errors=result["socket_errors"],
        # The warm-up's events are in the table too: rows >= both runs' 200s must hold.
        acked=result["requests"] - result["non2xx"] + warmed["requests"] - warmed["non2xx"],
        rows=rows,
        cpu_us=cpu / max(1, result["requests"]) * 1e6,
        load=load,
    )


async def wait_applied(url: str, seconds: float = 120.0) -> None:
    """Until the tracker's applier has applied every stored event (bounded)."""
    from sqlalchemy import func, select

    from tracker.db import Database
    from tracker.ingest.pending import EVENTS

    database = Database(url)
    waiting = select(func.count()).select_from(EVENTS).where(EVENTS.c.applied.is_(None))
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            async with database.session() as session:
                if not await session.scalar(waiting):
                    return
            await asyncio.sleep(0.2)
    finally:
        await database.dispose()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux): unlike req/s, barely moved by how busy
    the machine's other processes keep the cores."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_profile(pid: int, args: argparse.Namespace, name: str) -> subprocess.Popen[bytes]:
    """py-spy sampling the tracker for the measured run (200 Hz, collapsed stacks), idle
    frames left out: the shares are of the CPU the process used."""
    out = Path(args.profile) / f"{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [spy, "record", "-r", "200", "-f", "raw", "-o", str(out), "--pid", str(pid)]
    command += ["-d", str(args.duration), "--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top_entries(path: Path, count: int = 25) -> str:
    """The profile's functions by own time (leaf samples) and by time inside (any frame)."""
    own: dict[str, int] = {}
    inside: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        n = int(samples)
        total += n
        frames = [frame.split(" (", 1)[0] + " " + _where(frame) for frame in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inside[frame] = inside.get(frame, 0) + n
    lines = [f"{path.name}: {total} samples", "", "| own % | inside % | function |"]
    lines.append("|---|---|---|")
    ranked = sorted(own, key=own.__getitem__, reverse=True)[:count]
    for frame in ranked:
        lines.append(
            f"| {100 * own[frame] / total:.1f} | {100 * inside[frame] / total:.1f} | `{frame}` |"
        )
    lines += ["", "| inside % | function |", "|---|---|"]
    for frame in sorted(inside, key=inside.__getitem__, reverse=True)[:count]:
        lines.append(f"| {100 * inside[frame] / total:.1f} | `{frame}` |")
    return "\n".join(lines)


def _where(frame: str) -> str:
    """`file.py:line` of a py-spy frame `name (path/file.py:line)`, shortened to the file."""
    location = frame.rpartition(" (")[2].rstrip(")")
    return Path(location.rpartition(":")[0]).name or location


def _result(out: str) -> dict[str, int]:
    return dict(json.loads(out.split("RESULT ", 1)[1].splitlines()[0]))


def report(runs: list[Run], args: argparse.Namespace) -> str:
    lines = [
        f"## Webhook ingest ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"{os.cpu_count()} cores ({platform.machine()}, {platform.python_version()}), "
        f"{args.connections} connections, {args.duration}s per run, {args.rounds} interleaved "
        f"rounds, one uvicorn worker; wrk, signed requests with distinct JobIds ({args.job_ids}).",
        "",
        "| database | target | req/s (median) | vs bare | p50 ms | p99 ms | CPU us/request "
        "| non-2xx | rows >= acked |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in dict.fromkeys(r.db for r in runs):
        mine = [r for r in runs if r.db == kind]
        bare = statistics.median(r.rps for r in mine if r.target == "bare")
        for target in dict.fromkeys(r.target for r in mine):
            sel = [r for r in mine if r.target == target]
            rps = statistics.median(r.rps for r in sel)
            ok = "n/a" if target == "bare" else str(all(r.rows >= r.acked for r in sel))  # type: ignore[operator]
            lines.append(
                f"| {kind} | {target} | {rps:,.0f} | {rps / bare:.2f} | "
                f"{statistics.median(r.p50_ms for r in sel):.1f} | "
                f"{statistics.median(r.p99_ms for r in sel):.1f} | "
                f"{statistics.median(r.cpu_us for r in sel):.0f} | "
                f"{sum(r.non2xx + r.socket_errors for r in sel)} | {ok} |"
            )
    lines += [
        "",
        "Raw runs:",
        "",
        "| database | target | round | req/s | p50 ms | p99 ms | CPU us/request | non-2xx | "
        "socket errors | acked | rows | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.db} | {r.target} | {r.round} | {r.rps:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
            f"{r.cpu_us:.0f} | {r.non2xx} | {r.socket_errors} | {r.acked} | "
            f"{r.rows if r.rows is not None else '-'} | {r.load:.1f} |"
        )
    command = (
        "python benchmarks/ingest.py"
        + (" --postgres-url <url>" if args.postgres_url else "")
        + f" --duration {args.duration} --rounds {args.rounds}"
    )
    lines += ["", f"Command: `{command}`"]
    return "\n".join(lines)


# --- callback -> visible at a steady rate ------------------------------------------------------


@dataclass
class Visible:
    db: str
    target: str
    rate: int
    seconds: int
    sent: int
    refused: int  # answers other than 200
    answered_ms: list[float]  # POST -> 200, every callback
    visible_ms: list[float]  # 200 -> job in GET /jobs/{id}, every `SAMPLE_EVERY`th callback
    load: str


# Callbacks polled for, and how often near the target. Each poll is a request too and must not be
# the load: every 4th callback polled each millisecond sent more GETs than callbacks at 100/s,
# and on a loaded machine the server then answered the callbacks themselves hundreds of ms late.
SAMPLE_EVERY = 10
POLL_SECONDS = 0.002


async def steady_stream(
    base: str, rate: int, seconds: int, run_id: str
) -> tuple[list[float], list[float], list[int]]:
    """Signed callbacks at `rate`/s on a fixed schedule (a late answer never delays the next),
    each a new job; for every SAMPLE_EVERYth, poll GET /jobs/{id} every POLL_SECONDS from its
    200 until the job is there."""
    import aiohttp

    from tracker.vod import sign_callback

    answered: list[float] = []
    visible: list[float] = []
    refused: list[int] = []

    async def one(http: aiohttp.ClientSession, n: int) -> None:
        job_id = f"{run_id}-{n}"
        body = json.dumps(
            {
                "EventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "EventType": "AIVideoTagComplete",
                "JobId": job_id,
                "MediaId": f"media{n}",
                "Status": "success",
                "Code": "0",
                "Message": "OK",
                "Data": '{"Keyword":[{"Times":["3260"],"Tag":"cat"}]}',
            }
        )
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-VOD-TIMESTAMP": str(ts),
            "X-VOD-SIGNATURE": sign_callback(CALLBACK_URL, ts, KEY),
        }
        started = time.perf_counter()
        async with http.post(f"{base}/callbacks/vod", data=body, headers=headers) as answer:
            await answer.read()
        done = time.perf_counter()
        if answer.status != 200:  # 503: not committed within the store timeout
            refused.append(answer.status)
            return
        answered.append((done - started) * 1000)
        if n % SAMPLE_EVERY:
            return
        while (waited := time.perf_counter() - done) < 30:
            async with http.get(f"{base}/jobs/{job_id}") as got:
                await got.read()
                if got.status == 200:
                    visible.append((time.perf_counter() - done) * 1000)
                    return
            # Often near the target; slower once it is missed, so that a lagging applier is not
            # buried under polls that would then be the load being measured.
            await asyncio.sleep(POLL_SECONDS if waited < 0.05 else 0.01 if waited < 1 else 0.1)
        visible.append(math.inf)

    # Idle connections are dropped here before uvicorn's keep-alive (5 s) closes them under a
    # request on its way, which would read as a reset.
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=1.0)
    async with aiohttp.ClientSession(connector=connector) as http:
        tasks = []
        start = time.perf_counter()
        for n in range(rate * seconds):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(http, n)))
        await asyncio.gather(*tasks)
    return answered, visible, refused


def visible_run(kind: str, target: str, args: argparse.Namespace, workdir: Path) -> Visible:
    url = fresh_database(kind, args.postgres_url, workdir)
    command, env = server_command(target, url, args.port, args.base)
    server = subprocess.Popen(command, env={**os.environ, **env})
    try:
        wait_port(args.port)
        base = f"http://127.0.0.1:{args.port}"
        asyncio.run(steady_stream(base, args.visible_rate, 2, f"{kind}w{int(time.time())}"))
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        answered, visible, refused = asyncio.run(
            steady_stream(base, args.visible_rate, args.visible, f"{kind}v{int(time.time())}")
        )
    finally:
        server.terminate()
        server.wait(timeout=60)
    return Visible(
        db=kind,
        target=target,
        rate=args.visible_rate,
        seconds=args.visible,
        sent=len(answered) + len(refused),
        refused=len(refused),
        answered_ms=answered,
        visible_ms=visible,
        load=load,
    )


def visible_report(results: list[Visible]) -> str:
    lines = [
        "Callback -> visible: a steady stream of signed callbacks, each a new job, on a fixed "
        f"schedule; every {SAMPLE_EVERY}th is polled for in GET /jobs/{{id}} every "
        f"{POLL_SECONDS * 1000:g} ms from its 200 (each 10 ms after 50 ms, each 100 ms after "
        "1 s; not seen in 30 s counts as infinite) (target: p50 <= 20 ms at 100/s).",
        "",
        "| database | target | rate/s | seconds | callbacks | not 200 | 200 p50 / p99 ms "
        "| visible p50 / p90 / p99 ms | samples | load average at start |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in results:
        a, w = v.answered_ms or [math.nan], v.visible_ms or [math.nan]
        lines.append(
            f"| {v.db} | {v.target} | {v.rate} | {v.seconds} | {v.sent} | {v.refused} | "
            f"{percentile(a, 0.5):.1f} / {percentile(a, 0.99):.1f} | "
            f"{percentile(w, 0.5):.1f} / {percentile(w, 0.9):.1f} / {percentile(w, 0.99):.1f} | "
            f"{len(w)} | {v.load} |"
        )
    return "\n".join(lines)


# --- what the console's callback triggers (migration 0006) add to the inbox's statement --------

CALLBACK_TRIGGERS = {
    "sqlite": ["trg_console_callbacks_insert", "trg_console_callbacks_repeat"],
    "postgresql": [
        "trg_callback_events_console_insert ON callback_events",
        "trg_callback_events_console_update ON callback_events",
    ],
}


def inbox_batches(size: int, count: int, tag: str) -> list[list[tuple[dict[str, object], int]]]:
    """`count` batches of `size` distinct events, parsed as the receiver parses them."""
    from tracker.ingest.events import parse_callback

    batches = []
    for b in range(count):
        batch: list[tuple[dict[str, object], int]] = []
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for i in range(size):
            body = {"EventTime": now, "EventType": "AIVideoTagComplete"}
            body |= {"JobId": f"{tag}-{b}-{i}", "MediaId": "media1", "Status": "success"}
            row, _ = parse_callback(json.dumps(body).encode())
            row |= {"received_at": datetime.now(UTC), "headers": {"remote": "127.0.0.1"}}
            batch.append((row, 1))
        batches.append(batch)
    return batches


def sqlite_statement_cost(workdir: Path, size: int, drop: bool, count: int = 300) -> float:
    """CPU of the inbox's statement on SQLite (its thread, commit included), us per event."""
    import sqlite3

    from tracker.ingest.inbox import batch_values, upsert_sql

    url = fresh_database("sqlite", None, workdir)
    conn = sqlite3.connect(url.split("///", 1)[1], isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")  # as tracker.db sets it
    for trigger in CALLBACK_TRIGGERS["sqlite"] if drop else ():
        conn.execute(f"DROP TRIGGER {trigger}")
    sql = upsert_sql("sqlite", size)
    spent = []
    for batch in inbox_batches(size, count, f"s{size}{drop}"):
        values = batch_values(batch)
        started = time.thread_time()
        conn.execute(sql, values).fetchall()
        spent.append(time.thread_time() - started)
    conn.close()
    return float(statistics.median(spent)) / size * 1e6


async def postgres_statement_cost(url: str, size: int, drop: bool, count: int = 300) -> float:
    """The server's execution time of the inbox's statement (EXPLAIN ANALYZE: triggers
    included, no round trip), us per event, in a transaction rolled back."""
    import asyncpg

    from tracker.ingest.inbox import batch_json, upsert_sql

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    spent = []
    try:
        async with conn.transaction():
            for trigger in CALLBACK_TRIGGERS["postgresql"] if drop else ():
                await conn.execute(f"DROP TRIGGER {trigger}")
            sql = "EXPLAIN (ANALYZE, FORMAT JSON) " + upsert_sql("postgresql")
            for batch in inbox_batches(size, count, f"p{size}{drop}{time.time()}"):
                plan = await conn.fetchval(sql, batch_json(batch, "postgresql"))
                spent.append(json.loads(plan)[0]["Execution Time"] / 1000)
            raise _RollBack
    except _RollBack:
        pass
    finally:
        await conn.close()
    return float(statistics.median(spent)) / size * 1e6


class _RollBack(Exception):
    pass


def trigger_cost(args: argparse.Namespace, workdir: Path) -> str:
    """The inbox's own statement (one new event, a batch of 32) with and without the console's
    callback triggers, interleaved, median of 300 statements each, three rounds."""
    lines = [
        "The console's callback triggers in the inbox's statement (SQLite: the statement's CPU "
        "in its thread, commit included; PostgreSQL: the server's execution time, from EXPLAIN "
        "ANALYZE). Median of 300 statements, the median of 3 rounds, us per event:",
        "",
        "| database | batch | with the triggers | without | added |",
        "|---|---|---:|---:|---:|",
    ]
    kinds = ["sqlite"] + (["postgresql"] if args.postgres_url else [])
    for kind in kinds:
        if kind == "postgresql":
            fresh_database(kind, args.postgres_url, workdir)
        for size in (1, 32):
            found: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(3):
                for drop in (False, True):
                    if kind == "sqlite":
                        found[drop].append(sqlite_statement_cost(workdir, size, drop))
                    else:
                        cost = postgres_statement_cost(args.postgres_url, size, drop)
                        found[drop].append(asyncio.run(cost))
            with_, without = (statistics.median(found[drop]) for drop in (False, True))
            lines.append(
                f"| {kind} | {size} | {with_:.1f} | {without:.1f} | {with_ - without:+.1f} |"
            )
    return "\n".join(lines)


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    print("installing wrk from Debian's packages", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", default=os.environ.get("TRACKER_BENCH_POSTGRES_URL"))
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--job-ids",
        choices=["sequential", "random"],
        default="sequential",
        help="callbacks' JobIds: numbered per wrk thread, or 32 random hex digits as VOD's are",
    )
    parser.add_argument("--port", type=int, default=0, help="default: a free one")
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument(
        "--profile", help="record the tracker with py-spy into this folder and print its top"
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help="comma-separated, of bare, single, tracker and base (the tracker at --base)",
    )
    parser.add_argument("--base", help="another checkout's root, run as target `base`")
    parser.add_argument(
        "--visible", type=int, default=30, help="seconds of the steady stream (0: skip it)"
    )
    parser.add_argument("--visible-rate", type=int, default=100, help="callbacks/s of it")
    parser.add_argument(
        "--trigger-cost",
        action="store_true",
        help="also: the console's callback triggers in the inbox's statement, with and without",
    )
    args = parser.parse_args()
    ensure_wrk()
    args.port = args.port or free_port()
    kinds = ["sqlite"] + (["postgresql"] if args.postgres_url else [])
    if args.only:
        kinds = [args.only]
    runs: list[Run] = []
    visible: list[Visible] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            for rnd in range(1, args.rounds + 1):
                for target in args.targets.split(","):
                    run = one_run(kind, target, rnd, args, Path(tmp))
                    print(
                        f"{kind} {target} round {rnd}: {run.rps:,.0f} req/s, "
                        f"p99 {run.p99_ms:.1f} ms, non-2xx {run.non2xx}, "
                        f"acked {run.acked}, rows {run.rows}",
                        file=sys.stderr,
                    )
                    runs.append(run)
            for target in args.targets.split(",") if args.visible else ():
                if target in ("tracker", "base"):
                    visible.append(visible_run(kind, target, args, Path(tmp)))
        triggers = trigger_cost(args, Path(tmp)) if args.trigger_cost else ""
    print(report(runs, args) if runs else "")
    if visible:
        print("\n" + visible_report(visible))
    if triggers:
        print("\n" + triggers)
    if args.profile:
        for path in sorted(Path(args.profile).glob("*.txt")):
            print("\n" + top_entries(path))


if __name__ == "__main__":
    main()
