"""Benchmark 1, webhook ingest: signed, durable callbacks/s and latency against two baselines.

Drives three servers with the same wrk script (64 connections, one uvicorn worker each):
- `bare`: a Starlette endpoint that parses the same JSON and answers 200 (the ceiling);
- `single`: one SQLAlchemy Core INSERT + commit per request into `callback_events`, same driver
  (the database's single-row commit rate);
- `tracker`: the real `POST /callbacks/vod` with signature checks, group commit and the applier.
Runs are interleaved (bare, single, tracker) x rounds, on SQLite and on PostgreSQL when a URL is
given, and printed as a Markdown table of medians with ratios to `bare`, then every raw run.

    python benchmarks/ingest.py [--postgres-url postgresql+asyncpg://...] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from common import count_rows, fresh_database

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
function request()
  counter = counter + 1
  local ts = os.time()
  local sig = sigs[ts] or sigs[%(first)d]
  local body = string.format('{"EventTime":"2026-01-02T03:04:05Z","EventType":"AIVideoTagComplete",'
    .. '"JobId":"%(run)s-%%d-%%d","MediaId":"media%%d","Status":"success","Code":"0",'
    .. '"Message":"OK","Data":"{\\"Keyword\\":[{\\"Times\\":[\\"3260\\"],\\"Tag\\":\\"cat\\"}]}"}',
    tid, counter, counter)
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

    app = {"bare": bare_app, "single": lambda: single_app(url)}
    uvicorn.run(
        app[target](),  # type: ignore[operator]
        host="127.0.0.1",
        port=port,
        workers=1,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
    )


def server_command(target: str, url: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The baselines run in this script; the tracker is `tracker serve`, as users run it."""
    root = str(Path(__file__).resolve().parent.parent)
    if target != "tracker":
        return [sys.executable, __file__, "serve", target, url, str(port)], {"PYTHONPATH": root}
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


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


def lua_script(workdir: Path, run_id: str) -> Path:
    from tracker.vod import sign_callback

    now = int(time.time())
    sigs = ", ".join(
        f'[{ts}] = "{sign_callback(CALLBACK_URL, ts, KEY)}"' for ts in range(now - 5, now + 900)
    )
    path = workdir / f"{run_id}.lua"
    path.write_text(LUA % {"sigs": "{" + sigs + "}", "first": now, "run": run_id})
    return path


def one_run(kind: str, target: str, rnd: int, args: argparse.Namespace, workdir: Path) -> Run:
    url = fresh_database(kind, args.postgres_url, workdir)
    run_id = f"{kind}{target}{rnd}{int(time.time())}"
    warm_script, script = lua_script(workdir, run_id + "w"), lua_script(workdir, run_id)
    command, env = server_command(target, url, args.port)
    server = subprocess.Popen(command, env={**os.environ, **env})
    try:
        wait_port(args.port)
        wrk = ["wrk", "-t2", f"-c{args.connections}", "--timeout", "10s"]
        base = f"http://127.0.0.1:{args.port}"
        warm = subprocess.run(
            [*wrk, "-s", str(warm_script), "-d2s", base], check=True, capture_output=True, text=True
        ).stdout
        out = subprocess.run(
            [*wrk, "-s", str(script), f"-d{args.duration}s", base],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
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
    )


def _result(out: str) -> dict[str, int]:
    return dict(json.loads(out.split("RESULT ", 1)[1].splitlines()[0]))


def report(runs: list[Run], args: argparse.Namespace) -> str:
    lines = [
        f"## Webhook ingest ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"{os.cpu_count()} cores ({platform.machine()}, {platform.python_version()}), "
        f"{args.connections} connections, {args.duration}s per run, {args.rounds} interleaved "
        "rounds, one uvicorn worker; wrk, signed requests with distinct JobIds.",
        "",
        "| database | target | req/s (median) | vs bare | p50 ms | p99 ms | non-2xx "
        "| rows >= acked |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in dict.fromkeys(r.db for r in runs):
        mine = [r for r in runs if r.db == kind]
        bare = statistics.median(r.rps for r in mine if r.target == "bare")
        for target in TARGETS:
            sel = [r for r in mine if r.target == target]
            rps = statistics.median(r.rps for r in sel)
            ok = "n/a" if target == "bare" else str(all(r.rows >= r.acked for r in sel))  # type: ignore[operator]
            lines.append(
                f"| {kind} | {target} | {rps:,.0f} | {rps / bare:.2f} | "
                f"{statistics.median(r.p50_ms for r in sel):.1f} | "
                f"{statistics.median(r.p99_ms for r in sel):.1f} | "
                f"{sum(r.non2xx + r.socket_errors for r in sel)} | {ok} |"
            )
    lines += [
        "",
        "Raw runs:",
        "",
        "| database | target | round | req/s | p50 ms | p99 ms | non-2xx | "
        "socket errors | acked | rows |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.db} | {r.target} | {r.round} | {r.rps:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
            f"{r.non2xx} | {r.socket_errors} | {r.acked} | "
            f"{r.rows if r.rows is not None else '-'} |"
        )
    command = (
        "python benchmarks/ingest.py"
        + (" --postgres-url <url>" if args.postgres_url else "")
        + f" --duration {args.duration} --rounds {args.rounds}"
    )
    lines += ["", f"Command: `{command}`"]
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
    parser.add_argument("--port", type=int, default=10510)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    ensure_wrk()
    kinds = ["sqlite"] + (["postgresql"] if args.postgres_url else [])
    if args.only:
        kinds = [args.only]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            for rnd in range(1, args.rounds + 1):
                for target in TARGETS:
                    run = one_run(kind, target, rnd, args, Path(tmp))
                    print(
                        f"{kind} {target} round {rnd}: {run.rps:,.0f} req/s, "
                        f"p99 {run.p99_ms:.1f} ms, non-2xx {run.non2xx}, "
                        f"acked {run.acked}, rows {run.rows}",
                        file=sys.stderr,
                    )
                    runs.append(run)
    print(report(runs, args))


if __name__ == "__main__":
    main()
