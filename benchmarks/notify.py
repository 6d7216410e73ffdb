"""Benchmark: delivery at scale (issue 22), against `tracker serve` and `tracker notifier` as users
run them, every figure a ratio to a baseline measured in the same run.

1. drain: a backlog of 20,000 changes to one receiver, against a bare aiohttp client posting
   signed bodies of the same size at the relay's default concurrency (8); every change once;
2. fan-out: 100 subscriptions (each its own receiver port) x 2,000 changes, against the bare
   client posting the same 200,000 bodies (8 at a time per port);
3. latency: callback 200 -> delivered, signed callbacks at 100/s for 30 s;
4. ingest: signed callbacks/s (wrk, 64 connections) with 1 and 10 active subscriptions, against
   none (interleaved rounds, medians);
5. notifiers (PostgreSQL): two `tracker notifier` processes draining the backlog, against one;
6. kill -9: a notifier killed mid-drain, another started: every change arrives, duplicates
   counted against the bound the relay states (tracker.notify.relay.duplicate_bound).

The receivers run in a process of their own (aiohttp on uvloop), so that the bare client and the
relay meet the same receiver and neither shares a core's event loop with it. Prints a Markdown
report with the load average before and after each measure.

    python benchmarks/notify.py [--postgres-url postgresql+asyncpg://...] [--quick]
        [--only sqlite|postgresql] [--measures drain,fanout,latency,ingest,notifiers,kill]
        [--profile DIR]   (py-spy records the tracker process of each measure into DIR)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import free_port, fresh_database, percentile  # noqa: E402

KEY = "BenchKey123"
CALLBACK_URL = "https://tracker.example.com/callbacks/vod"
MEASURES = ("drain", "fanout", "latency", "ingest", "notifiers", "kill")


# --- the receivers (a child process: `notify.py receive PORTS PARSE`) ----------------------------


def receive(ports: int, parse: bool) -> None:
    """Serve `ports` receivers that answer 204 and count deliveries by webhook-id; GET /stats
    and /arrivals on any of them; POST /reset forgets everything."""
    import uvloop
    from aiohttp import web

    arrivals: dict[str, float] = {}  # webhook-id (or job id when parsing) -> first arrival
    state = {"count": 0, "bytes": 0, "first": 0.0, "last": 0.0}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic()
        # One webhook-id goes to every subscription: a delivery is the id at one receiver.
        port = request.transport.get_extra_info("sockname")[1] if request.transport else 0
        key = f"{port}:{request.headers.get('webhook-id', '')}"
        if parse:
            key = json.loads(body)["data"]["job_id"]
        if not state["count"]:
            state["first"] = now
        state["count"] += 1
        state["bytes"] += len(body)
        state["last"] = now
        arrivals.setdefault(key, now)
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({**state, "unique": len(arrivals)})

    async def arrived(request: web.Request) -> web.Response:
        return web.json_response(arrivals)

    async def reset(request: web.Request) -> web.Response:
        arrivals.clear()
        state.update(count=0, bytes=0, first=0.0, last=0.0)
        return web.Response(status=204)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/stats", stats)
        app.router.add_get("/arrivals", arrived)
        app.router.add_post("/reset", reset)
        app.router.add_post("/{tail:.*}", hook)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        bound = []
        for _ in range(ports):
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
            await site.start()
            bound.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        print(json.dumps({"ports": bound}), flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


class Receivers:
    """The receiver process, seen from the benchmark."""

    def __init__(self, ports: int = 1, parse: bool = False) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "receive", str(ports), "1" if parse else "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.ports: list[int] = json.loads(self.process.stdout.readline())["ports"]
        self.urls = [f"http://127.0.0.1:{port}/hook" for port in self.ports]
        self.base = f"http://127.0.0.1:{self.ports[0]}"

    def stats(self) -> dict[str, Any]:
        return dict(asyncio.run(_get_json(f"{self.base}/stats")))

    def arrivals(self) -> dict[str, float]:
        return dict(asyncio.run(_get_json(f"{self.base}/arrivals")))

    def reset(self) -> None:
        async def post() -> None:
            async with aiohttp.ClientSession() as http, http.post(f"{self.base}/reset"):
                pass

        asyncio.run(post())

    def wait_for(self, unique: int, within: float, first: float = 120.0) -> dict[str, Any]:
        """Until `unique` distinct deliveries arrived or nothing arrived for `within` s (`first`
        s for the first: a `tracker notifier` starting on a loaded machine takes a while)."""
        last_change, seen = time.monotonic(), -1
        while True:
            stats = self.stats()
            if stats["unique"] >= unique:
                return stats
            if stats["unique"] != seen:
                seen, last_change = stats["unique"], time.monotonic()
            elif time.monotonic() - last_change > (within if seen else first):
                return stats
            time.sleep(0.05)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        return await answer.json()


def rate(stats: dict[str, Any]) -> float:
    """Deliveries/s at the receiver, first to last arrival."""
    span = stats["last"] - stats["first"]
    return (stats["count"] - 1) / span if span > 0 else 0.0


# --- the bare client -----------------------------------------------------------------------------


def bare_client(urls: list[str], per_url: int, body_size: int, concurrency: int) -> None:
    """Post `per_url` signed bodies of `body_size` bytes to each URL, `concurrency` at a time
    per URL, on uvloop, through one session (connections reused per receiver)."""
    import uvloop

    from tracker.notify.signing import new_secret, webhook_headers

    secret = new_secret()
    prefix = b'{"type":"job.succeeded","timestamp":"2026-01-01T00:00:00.000000Z","data":"'
    body = prefix + b"x" * max(0, body_size - len(prefix) - 2) + b'"}'

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=concurrency)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def worker(url: str, first: int) -> None:
                for n in range(first, per_url, concurrency):
                    headers = webhook_headers([secret], f"chg_{n}", int(time.time()), body)
                    async with http.post(url, data=body, headers=headers) as answer:
                        await answer.read()

            await asyncio.gather(*(worker(url, k) for url in urls for k in range(concurrency)))

    uvloop.run(main())


# --- the tracker -----------------------------------------------------------------------------


def tracker_env(url: str, port: int, **env: str) -> dict[str, str]:
    """The environment of a benchmarked tracker: this checkout's code on `url` and `port`, the
    scheduler off, loopback receivers allowed, callbacks signed with KEY."""
    return {
        **os.environ,
        "TRACKER_DATABASE_URL": url,
        "TRACKER_PORT": str(port),
        "TRACKER_NOTIFY_ALLOW_PRIVATE": "on",
        "TRACKER_SCHEDULER": "off",
        "TRACKER_CALLBACK_URL": CALLBACK_URL,
        "TRACKER_CALLBACK_AUTH_KEY": KEY,
        "PYTHONPATH": str(ROOT),
        **env,
    }


@contextmanager
def tracker(
    url: str, command: str = "serve", profile: Path | None = None, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`tracker serve` (ready when its port answers) or `tracker notifier`, stopped at the end;
    with `profile`, py-spy records it until then."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tracker", command],
        env=tracker_env(url, port, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    spy = None
    try:
        if command == "serve":
            wait_port(port)
        process.port = port  # type: ignore[attr-defined]
        if profile is not None:
            spy = subprocess.Popen(
                [
                    shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(process.pid),
                    "-o",
                    str(profile),
                    "-f",
                    "raw",
                    "--rate",  # as ingest.py: never pausing the process it measures
                    "200",
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)
        yield process
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_port(port: int, timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("tracker did not start")


# --- rows: subscriptions and changes, written straight into the database ----------------------


async def _subscribe(url: str, receivers: list[str]) -> None:
    from tracker.db import Database
    from tracker.notify.subscriptions import SubscriptionInput, create_subscription

    database = Database(url)
    try:
        async with database.write() as session:
            for receiver in receivers:
                data = SubscriptionInput(url=receiver, event_types=None)
                await create_subscription(session, data, datetime.now(UTC))
    finally:
        await database.dispose()


async def _changes(url: str, count: int, prefix: str) -> None:
    """`count` jobs with a JobId: one `job.submitted` change each, in commits of 5,000."""
    from sqlalchemy import insert

    from tracker.db import Database
    from tracker.models import Job

    database = Database(url)
    now = datetime.now(UTC)
    try:
        for start in range(0, count, 5_000):
            rows = [
                {
                    "job_id": f"{prefix}-{n}",
                    "state": "processing",
                    "media_id": f"media-{prefix}-{n}",
                    "type": "AIVideoTag",
                    "region": "cn-shanghai",
                    "origin": "submitted",
                    "submitted_at": now,
                    "updated_at": now,
                }
                for n in range(start, min(count, start + 5_000))
            ]
            async with database.write() as session:
                await session.execute(insert(Job), rows)
    finally:
        await database.dispose()


def backlog(url: str, receivers: list[str], changes: int) -> None:
    asyncio.run(_subscribe(url, receivers))
    asyncio.run(_changes(url, changes, f"c{time.monotonic_ns()}"))


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# --- the measures ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, kind: str, new_url: Any, quick: bool, profile: Path | None) -> None:
        self.kind = kind
        self.new_url = new_url
        self.quick = quick
        self.profile = profile

    def spy(self, name: str) -> Path | None:
        return None if self.profile is None else self.profile / f"{name}-{self.kind}.txt"

    def drain(self) -> dict[str, Any]:
        count = 5_000 if self.quick else 20_000
        rx = Receivers(1)
        try:
            url = self.new_url()
            backlog(url, rx.urls, count)
            with tracker(url, profile=self.spy("drain")):
                relay = rx.wait_for(count, within=30)
            rx.reset()
            bare_client(rx.urls, count, relay["bytes"] // max(1, relay["count"]), 8)
            bare = rx.stats()
        finally:
            rx.close()
        return {
            "count": count,
            "relay": rate(relay),
            "bare": rate(bare),
            "unique": relay["unique"],
            "duplicates": relay["count"] - relay["unique"],
            "body": relay["bytes"] // max(1, relay["count"]),
        }

    def fanout(self) -> dict[str, Any]:
        subs, changes = 100, (500 if self.quick else 2_000)
        rx = Receivers(subs)
        try:
            url = self.new_url()
            backlog(url, rx.urls, changes)
            with tracker(url, profile=self.spy("fanout")):
                relay = rx.wait_for(subs * changes, within=30)
            rx.reset()
            bare_client(rx.urls, changes, relay["bytes"] // max(1, relay["count"]), 8)
            bare = rx.stats()
        finally:
            rx.close()
        return {
            "count": subs * changes,
            "relay": rate(relay),
            "bare": rate(bare),
            "unique": relay["unique"],
            "duplicates": relay["count"] - relay["unique"],
        }

    def latency(self) -> dict[str, Any]:
        seconds = 10 if self.quick else 30
        rx = Receivers(1, parse=True)
        try:
            url = self.new_url()
            asyncio.run(_subscribe(url, rx.urls))
            with tracker(url, profile=self.spy("latency")) as process:
                base = f"http://127.0.0.1:{process.port}"  # type: ignore[attr-defined]
                answered = asyncio.run(steady(base, 100, seconds, f"l{time.monotonic_ns()}"))
                rx.wait_for(len(answered), within=10)
            arrivals = rx.arrivals()
        finally:
            rx.close()
        late = [(arrivals[j] - t) * 1000 for j, t in answered.items() if j in arrivals]
        return {"sent": len(answered), "delivered": len(late), "ms": late}

    def ingest(self) -> dict[str, Any]:
        seconds, rounds = (3, 1) if self.quick else (10, 3)
        rx = Receivers(10)
        runs: dict[int, list[float]] = {0: [], 1: [], 10: []}
        try:
            with tempfile.TemporaryDirectory() as tmp:
                for rnd in range(rounds):
                    for subs in runs:
                        url = self.new_url()
                        asyncio.run(_subscribe(url, rx.urls[:subs]))
                        with tracker(url, profile=self.spy(f"ingest{subs}-{rnd}")) as process:
                            port = process.port  # type: ignore[attr-defined]
                            runs[subs].append(wrk(port, seconds, Path(tmp), f"i{subs}r{rnd}"))
        finally:
            rx.close()
        return {subs: statistics.median(values) for subs, values in runs.items()} | {"raw": runs}

    def notifiers(self) -> dict[str, Any]:
        count = 5_000 if self.quick else 20_000
        rates = {}
        for processes in (1, 2, 1, 2) if not self.quick else (1, 2):
            rx = Receivers(1)
            try:
                url = self.new_url()
                backlog(url, rx.urls, count)
                with contextlib_exit() as stack:
                    for n in range(processes):
                        spy = self.spy(f"notifier{processes}-{n}")
                        stack.enter_context(tracker(url, "notifier", profile=spy))
                    stats = rx.wait_for(count, within=30)
            finally:
                rx.close()
            rates.setdefault(processes, []).append(rate(stats))
            assert stats["unique"] == count, stats
            assert stats["count"] == count, stats
        return {n: statistics.median(r) for n, r in rates.items()} | {"raw": rates}

    def kill(self) -> dict[str, Any]:
        from tracker.notify.recorder import duplicate_bound

        count = 5_000 if self.quick else 20_000
        rx = Receivers(1)
        try:
            url = self.new_url()
            backlog(url, rx.urls, count)
            with tracker(url, "notifier") as first:
                while rx.stats()["unique"] < count // 3:
                    time.sleep(0.01)
                first.kill()  # SIGKILL: nothing recorded after this
                first.wait()
                at_kill = rx.stats()["unique"]
            with tracker(url, "notifier"):
                stats = rx.wait_for(count, within=60)
        finally:
            rx.close()
        on = os.environ.get("TRACKER_NOTIFY_COURIER") == "on"
        bound = duplicate_bound(concurrency=8, subscriptions=1, courier=on)
        return {
            "count": count,
            "at_kill": at_kill,
            "unique": stats["unique"],
            "duplicates": stats["count"] - stats["unique"],
            "bound": bound,
        }


@contextmanager
def contextlib_exit() -> Iterator[Any]:
    import contextlib

    with contextlib.ExitStack() as stack:
        yield stack


async def steady(base: str, per_second: int, seconds: int, run: str) -> dict[str, float]:
    """Signed callbacks at a steady rate; when each was answered 200, by job id."""
    from tracker.vod import sign_callback

    answered: dict[str, float] = {}
    began = time.monotonic()
    async with aiohttp.ClientSession() as http:

        async def one(n: int) -> None:
            job_id = f"{run}-{n}"
            now = int(time.time())
            headers = {
                "X-VOD-TIMESTAMP": str(now),
                "X-VOD-SIGNATURE": sign_callback(CALLBACK_URL, now, KEY),
            }
            async with http.post(
                f"{base}/callbacks/vod", json=callback(job_id), headers=headers
            ) as answer:
                if answer.status == 200:
                    answered[job_id] = time.monotonic()

        tasks = []
        for n in range(per_second * seconds):
            await asyncio.sleep(max(0.0, began + n / per_second - time.monotonic()))
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
    return answered


def callback(job_id: str) -> dict[str, Any]:
    return {
        "EventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "EventType": "AIVideoTagComplete",
        "JobId": job_id,
        "MediaId": f"media-{job_id}",
        "Status": "success",
        "Code": "0",
        "Message": "OK",
        "Data": json.dumps({"Keyword": [{"Tag": "cat"}]}),
    }


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
  local body = string.format('{"EventTime":"%%s","EventType":"AIVideoTagComplete",'
    .. '"JobId":"%(run)s-%%d-%%d","MediaId":"media%%d","Status":"success","Code":"0",'
    .. '"Message":"OK","Data":"{\\"Keyword\\":[{\\"Tag\\":\\"cat\\"}]}"}',
    os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", ts), tid, counter, counter)
  return wrk.format("POST", "/callbacks/vod", {["Content-Type"] = "application/json",
    ["X-VOD-TIMESTAMP"] = tostring(ts), ["X-VOD-SIGNATURE"] = sig}, body)
end
function done(summary, latency, requests)
  io.write(string.format('RESULT {"requests":%%d,"duration_us":%%d,"non2xx":%%d}\n',
    summary.requests, summary.duration, summary.errors.status))
end
"""


def wrk(port: int, seconds: int, workdir: Path, run: str) -> float:
    """Signed callbacks/s answered 200 by the tracker, wrk with 64 connections."""
    from tracker.vod import sign_callback

    now = int(time.time())
    sigs = ", ".join(
        f'[{ts}] = "{sign_callback(CALLBACK_URL, ts, KEY)}"' for ts in range(now - 5, now + 300)
    )
    script = workdir / f"{run}.lua"
    script.write_text(LUA % {"sigs": "{" + sigs + "}", "first": now, "run": run})
    out = subprocess.run(
        ["wrk", "-t2", "-c64", "--timeout", "10s", "-s", str(script), f"-d{seconds}s"]
        + [f"http://127.0.0.1:{port}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert result["non2xx"] == 0, result
    return float(result["requests"]) / (result["duration_us"] / 1e6)


# --- the report ---------------------------------------------------------------------------------


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"## Delivery at scale ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"{os.cpu_count()} cores ({platform.machine()}, Python {platform.python_version()}); "
        "`tracker serve` / `tracker notifier` in subprocesses, the receivers in a process of "
        "their own, the bare client and the callback senders in the benchmark's process. "
        "Load average (1/5/15 min) before and after each measure in brackets.",
        "",
        "| database | measure | tracker | baseline | ratio | target | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, r in results.items():
        if "drain" in r:
            d = r["drain"]
            lines.append(
                f"| {kind} | drain {d['count']:,} changes, one receiver "
                f"({d['unique']:,} unique, {d['duplicates']} duplicates, {d['body']} B bodies) "
                f"| {d['relay']:,.0f}/s | {d['bare']:,.0f}/s | {d['relay'] / d['bare']:.2f} "
                f"| >= 0.5 | {d['load']} |"
            )
        if "fanout" in r:
            f = r["fanout"]
            lines.append(
                f"| {kind} | fan-out 100 subscriptions, {f['count']:,} deliveries "
                f"({f['unique']:,} unique, {f['duplicates']} duplicates) "
                f"| {f['relay']:,.0f}/s | {f['bare']:,.0f}/s | {f['relay'] / f['bare']:.2f} "
                f"| >= 0.4 | {f['load']} |"
            )
        if "latency" in r:
            lat = r["latency"]
            ms = lat["ms"]
            lines.append(
                f"| {kind} | callback 200 -> delivered at 100/s "
                f"({lat['delivered']:,} of {lat['sent']:,}) | p50 {statistics.median(ms):.1f} ms, "
                f"p99 {percentile(ms, 0.99):.1f} ms | | | p50 <= 50, p99 <= 250 | {lat['load']} |"
            )
        if "ingest" in r:
            i = r["ingest"]
            for subs in (1, 10):
                lines.append(
                    f"| {kind} | signed ingest with {subs} subscription{'s' * (subs > 1)} vs none "
                    f"(raw {i['raw'][subs]} / {i['raw'][0]}) | {i[subs]:,.0f}/s | {i[0]:,.0f}/s "
                    f"| {i[subs] / i[0]:.2f} | >= {0.9 if subs == 1 else 0.75} | {i['load']} |"
                )
        if "notifiers" in r:
            n = r["notifiers"]
            lines.append(
                f"| {kind} | two `tracker notifier` vs one (raw {n['raw']}) | {n[2]:,.0f}/s "
                f"| {n[1]:,.0f}/s | {n[2] / n[1]:.2f} | >= 1.3 | {n['load']} |"
            )
        if "kill" in r:
            k = r["kill"]
            lines.append(
                f"| {kind} | kill -9 mid-drain ({k['at_kill']:,} of {k['count']:,} had arrived) "
                f"| {k['count'] - k['unique']} lost, {k['duplicates']} duplicates "
                f"| bound {k['bound']} | | 0 lost, within the bound | {k['load']} |"
            )
    command = "python benchmarks/notify.py" + (" --postgres-url <url>" if args.postgres_url else "")
    command += " --quick" * args.quick
    lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "receive":
        receive(int(sys.argv[2]), sys.argv[3] == "1")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", default=os.environ.get("TRACKER_BENCH_POSTGRES_URL"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--measures", default=",".join(MEASURES))
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("needs wrk: apt-get install wrk")
    measures = [m for m in args.measures.split(",") if m]
    kinds = ["sqlite"] + (["postgresql"] if args.postgres_url else [])
    if args.only:
        kinds = [args.only]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            results[kind] = {}

            def new_url(kind: str = kind) -> str:
                return fresh_database(kind, args.postgres_url, Path(tmp))

            bench = Bench(kind, new_url, args.quick, args.profile)
            for name in measures:
                if name == "notifiers" and kind == "sqlite":
                    continue  # SQLite has one writer: replicas share it, they do not scale
                before = load()
                started = time.monotonic()
                try:
                    out = getattr(bench, name)()
                except AssertionError as exc:  # the other measures still report
                    print(f"{kind} {name} failed: {exc}", file=sys.stderr)
                    continue
                out["load"] = f"{before} -> {load()}"
                print(
                    f"{kind} {name}: {time.monotonic() - started:.0f} s, load {out['load']}",
                    file=sys.stderr,
                )
                results[kind][name] = out
    print(report(results, args))


if __name__ == "__main__":
    main()
