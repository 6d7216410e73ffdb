"""Benchmark: notifications (issue 14's speed items), against `tracker serve` as users run it.

1. visible: callback answered -> job visible in GET /jobs/{id}, one callback every 100 ms (idle);
2. delivered: callback answered -> webhook received by a local receiver, at 10 callbacks/s;
3. throughput: deliveries/s to one local receiver, against a bare aiohttp client posting the
   same signed bodies with the same concurrency;
4. isolation: the same with a dead receiver (accepts, never answers) subscribed beside it;
5. ingest: callbacks/s recorded by 32 concurrent senders, with one active subscription vs none.
Runs on SQLite, and on PostgreSQL when a URL is given; prints a Markdown report.

    python benchmarks/notify.py [--postgres-url postgresql+asyncpg://...] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
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
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import free_port, fresh_database, percentile  # noqa: E402

from tracker.notify.signing import new_secret, webhook_headers  # noqa: E402


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


@contextmanager
def tracker(url: str, **env: str) -> Iterator[str]:
    port = free_port()
    environ = {
        **os.environ,
        "TRACKER_DATABASE_URL": url,
        "TRACKER_PORT": str(port),
        "TRACKER_NOTIFY_ALLOW_PRIVATE": "on",
        "TRACKER_SCHEDULER": "off",
        "PYTHONPATH": str(ROOT),
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tracker", "serve"],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError("tracker did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)


class Receiver:
    """Records the arrival time of each delivery by job; `dead` accepts and never answers."""

    def __init__(self, dead: bool = False) -> None:
        self.dead = dead
        self.arrivals: dict[str, float] = {}
        self.count = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.dead:
            await asyncio.sleep(3600)
        self.count += 1
        try:
            job_id = json.loads(body)["data"]["job_id"]
        except (ValueError, KeyError, TypeError):
            job_id = str(self.count)
        self.arrivals.setdefault(job_id, time.perf_counter())
        return web.Response(status=204)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def subscribe(http: aiohttp.ClientSession, base: str, url: str, types: list[str]) -> None:
    async with http.post(
        f"{base}/subscriptions", json={"url": url, "event_types": types}
    ) as answer:
        assert answer.status == 201, await answer.text()


async def visible(base: str, count: int, run: str) -> list[float]:
    """ms from the callback's answer to the job in GET /jobs/{id}, one callback per 100 ms."""
    found: list[float] = []
    async with aiohttp.ClientSession() as http:
        for n in range(count):
            job_id = f"{run}-vis-{n}"
            async with http.post(f"{base}/callbacks/vod", json=callback(job_id)) as answer:
                assert answer.status == 200
            answered = time.perf_counter()
            while True:
                async with http.get(f"{base}/jobs/{job_id}") as got:
                    if got.status == 200:
                        break
                await asyncio.sleep(0.001)
            found.append((time.perf_counter() - answered) * 1000)
            await asyncio.sleep(0.1)
    return found


async def delivered(base: str, count: int, run: str) -> list[float]:
    """ms from the callback's answer to the webhook's arrival, at 10 callbacks/s."""
    receiver = Receiver()
    await receiver.start()
    answered: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession() as http:
            await subscribe(http, base, receiver.url, ["job.succeeded"])
            for n in range(count):
                job_id = f"{run}-del-{n}"
                async with http.post(f"{base}/callbacks/vod", json=callback(job_id)) as answer:
                    assert answer.status == 200
                answered[job_id] = time.perf_counter()
                await asyncio.sleep(0.1)
        for _ in range(600):  # 30 s at most
            if len(receiver.arrivals) >= count:
                break
            await asyncio.sleep(0.05)
    finally:
        await receiver.stop()
    arrivals = receiver.arrivals
    return [(arrivals[j] - t) * 1000 for j, t in answered.items() if j in arrivals]


async def burst(base: str, count: int, run: str, *, dead: bool) -> float:
    """Deliveries/s of `count` changes to one healthy receiver (beside a dead one if `dead`)."""
    receiver = Receiver()
    await receiver.start()
    corpse = Receiver(dead=True)
    await corpse.start()
    try:
        async with aiohttp.ClientSession() as http:
            await subscribe(http, base, receiver.url, ["job.succeeded"])
            if dead:
                await subscribe(http, base, corpse.url, ["job.succeeded"])
            sem = asyncio.Semaphore(32)

            async def post(n: int) -> None:
                async with (
                    sem,
                    http.post(f"{base}/callbacks/vod", json=callback(f"{run}-b-{n}")) as answer,
                ):
                    assert answer.status == 200

            await asyncio.gather(*(post(n) for n in range(count)))
        started = time.perf_counter()  # from the last callback's answer: the changes exist
        first = None
        deadline = time.monotonic() + 120
        while receiver.count < count and time.monotonic() < deadline:
            if first is None and receiver.count:
                first = time.perf_counter()
            await asyncio.sleep(0.01)
        del started
        arrivals = sorted(receiver.arrivals.values())
        if len(arrivals) < 2:
            return 0.0
        return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    finally:
        await receiver.stop()
        await corpse.stop()


async def bare_client(count: int, concurrency: int) -> float:
    """Deliveries/s of the same signed bodies by a bare aiohttp client, same concurrency."""
    receiver = Receiver()
    await receiver.start()
    secret = new_secret()
    try:
        async with aiohttp.ClientSession() as http:
            sem = asyncio.Semaphore(concurrency)

            async def post(n: int) -> None:
                body = json.dumps(
                    {
                        "type": "job.succeeded",
                        "timestamp": "2026-01-01T00:00:00Z",
                        "data": {"job_id": f"bare-{n}", "state": "succeeded", "seq": n},
                    },
                    separators=(",", ":"),
                ).encode()
                headers = webhook_headers([secret], f"chg_{n}", int(time.time()), body)
                async with sem, http.post(receiver.url, data=body, headers=headers) as answer:
                    await answer.read()

            started = time.perf_counter()
            await asyncio.gather(*(post(n) for n in range(count)))
            return count / (time.perf_counter() - started)
    finally:
        await receiver.stop()


async def ingest(base: str, seconds: float, run: str) -> float:
    """Callbacks/s answered 200 by 32 concurrent senders for `seconds`."""
    done = 0
    stop = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:

        async def sender(worker: int) -> None:
            nonlocal done
            n = 0
            while time.monotonic() < stop:
                n += 1
                job_id = f"{run}-i-{worker}-{n}"
                async with http.post(f"{base}/callbacks/vod", json=callback(job_id)) as answer:
                    if answer.status == 200:
                        done += 1

        started = time.monotonic()
        await asyncio.gather(*(sender(w) for w in range(32)))
        return done / (time.monotonic() - started)


def measure(kind: str, url_of: Any, quick: bool) -> dict[str, Any]:
    n_lat = 50 if quick else 200
    n_burst = 500 if quick else 2000
    run = f"r{int(time.time())}"
    out: dict[str, Any] = {}
    with tracker(url_of()) as base:
        out["visible"] = asyncio.run(visible(base, n_lat, run))
    with tracker(url_of()) as base:
        out["delivered"] = asyncio.run(delivered(base, n_lat, run))
    with tracker(url_of()) as base:
        out["relay_rate"] = asyncio.run(burst(base, n_burst, run, dead=False))
    out["bare_rate"] = asyncio.run(bare_client(n_burst, 8))
    with tracker(url_of(), TRACKER_NOTIFY_TIMEOUT="60s") as base:
        out["beside_dead"] = asyncio.run(burst(base, n_burst, run, dead=True))
    seconds = 5.0 if quick else 10.0
    with tracker(url_of()) as base:
        out["ingest_without"] = asyncio.run(ingest(base, seconds, run + "a"))
    with tracker(url_of()) as base:

        async def with_sub() -> float:
            receiver = Receiver()
            await receiver.start()
            try:
                async with aiohttp.ClientSession() as http:
                    await subscribe(http, base, receiver.url, ["job.succeeded"])
                return await ingest(base, seconds, run + "b")
            finally:
                await receiver.stop()

        out["ingest_with"] = asyncio.run(with_sub())
    return out


def report(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"## notify.py ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"{os.cpu_count()} cores ({platform.machine()}, {platform.python_version()}); "
        "`tracker serve` in a subprocess, receivers and clients in the benchmark's process.",
        "",
        "| database | callback -> visible p50 / p99 ms (target p50 <= 20) "
        "| callback -> delivered p50 / p99 ms (targets 50 / 250) "
        "| relay deliveries/s | bare client/s | ratio (>= 0.5) "
        "| beside a dead receiver/s | ratio (>= 0.9) "
        "| ingest/s without / with a subscription | ratio (>= 0.9) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, r in results.items():
        vis, dlv = r["visible"], r["delivered"]
        lines.append(
            f"| {kind} | {statistics.median(vis):.1f} / {percentile(vis, 0.99):.1f} "
            f"| {statistics.median(dlv):.1f} / {percentile(dlv, 0.99):.1f} "
            f"| {r['relay_rate']:,.0f} | {r['bare_rate']:,.0f} "
            f"| {r['relay_rate'] / r['bare_rate']:.2f} "
            f"| {r['beside_dead']:,.0f} | {r['beside_dead'] / r['relay_rate']:.2f} "
            f"| {r['ingest_without']:,.0f} / {r['ingest_with']:,.0f} "
            f"| {r['ingest_with'] / r['ingest_without']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        results["sqlite"] = measure(
            "sqlite", lambda: fresh_database("sqlite", None, workdir), args.quick
        )
        if args.postgres_url:
            results["postgresql"] = measure(
                "postgresql",
                lambda: fresh_database("postgresql", args.postgres_url, workdir),
                args.quick,
            )
    print(report(results))


if __name__ == "__main__":
    main()
