"""Benchmark: VOD events consumed from an MNS queue, against a bare receive-and-delete loop.

Two measures, each on SQLite and (with --postgres-url) PostgreSQL, against `tracker fake-vod`'s
queue API in a process of its own:
- throughput: a queue pre-filled with `--messages` AI events is drained either by a bare aiohttp
  loop (BatchReceive 16 + BatchDelete, nothing else, as many loops as the tracker has pollers) or
  by `tracker serve`'s consumer (stored in the inbox, committed, then deleted). Both are timed the
  same way, from outside: from the first message taken off the queue to the queue being empty,
  by polling GetQueueAttributes. Rounds are interleaved (bare, tracker) x rounds.
- latency at light load: one AI event at a time written to the queue for a submitted job; the
  time until `GET /jobs/{id}` shows it finished.

    python benchmarks/mns.py [--postgres-url postgresql+asyncpg://...] [--messages 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import count_rows, free_port, fresh_database, percentile  # noqa: E402

from tracker.mns.client import MnsClient  # noqa: E402
from tracker.mns.signing import StaticCredentials, StaticKey  # noqa: E402

AK, SECRET = "LTAIbenchMns", "bench-mns-secret"
TOKEN = "bench-token"
QUEUE = "bench-events"
POLLERS = 2  # TRACKER_MNS_POLLERS for the tracker, and the bare loop's concurrency (--pollers)


def event(job_id: str, media_id: str = "bench-media") -> str:
    return json.dumps(
        {
            "EventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "EventType": "AIVideoTagComplete",
            "JobId": job_id,
            "MediaId": media_id,
            "Status": "success",
            "Code": "0",
            "Message": "OK",
            "Data": '{"Keyword":[{"Times":["3260"],"Tag":"cat"}]}',
        },
        separators=(",", ":"),
    )


class Processes:
    """Background `tracker` processes, stopped at exit whatever happens."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = Path(tempfile.mkstemp(suffix=".log", prefix="bench-mns-")[1])
        self.logs.append(log)
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "tracker", *args],
                env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self) -> None:
        for process in self.started:
            self.stop(process)
        for log in self.logs:
            log.unlink(missing_ok=True)


async def wait_http(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(url)).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {seconds}s")


async def fill(client: MnsClient, count: int) -> None:
    run = uuid.uuid4().hex[:8]
    bodies = [event(f"{run}-{n}") for n in range(count)]
    batches = [bodies[i : i + 16] for i in range(0, count, 16)]
    gate = asyncio.Semaphore(8)

    async def one(batch: list[str]) -> None:
        async with gate:
            await client.send(QUEUE, batch)

    await asyncio.gather(*(one(batch) for batch in batches))


async def drain_time(client: MnsClient, count: int, seconds: float = 300) -> float:
    """Seconds from the first message taken off the queue to an empty queue (polled)."""
    deadline = time.monotonic() + seconds
    started: float | None = None
    while time.monotonic() < deadline:
        attributes = await client.attributes(QUEUE)
        left = attributes.active + attributes.inactive
        now = time.monotonic()
        if started is None and attributes.active < count:
            started = now
        if left == 0 and started is not None:
            return now - started
        await asyncio.sleep(0.05)
    raise RuntimeError(f"queue not drained in {seconds}s")


async def bare_loop(endpoint: str, stop: asyncio.Event) -> int:
    """Receive 16, delete them, nothing else; signed like the tracker's client, by hand."""
    client = MnsClient(endpoint, StaticCredentials(StaticKey(AK, SECRET)))
    done = 0
    try:
        while not stop.is_set():
            messages = await client.receive(QUEUE, 16, 1)
            if messages:
                await client.delete(QUEUE, [m.receipt_handle for m in messages])
                done += len(messages)
    finally:
        await client.close()
    return done


@dataclass
class Run:
    db: str
    target: str
    round: int
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def serve_env(database_url: str, port: int, mns_url: str, vod_url: str) -> dict[str, str]:
    return {
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_PORT": str(port),
        "TRACKER_MNS_ENDPOINT": mns_url,
        "TRACKER_MNS_QUEUE": QUEUE,
        "TRACKER_MNS_WAIT": "1",
        "TRACKER_MNS_POLLERS": str(POLLERS),
        "TRACKER_VOD_ENDPOINT": vod_url,
        "TRACKER_VOD_RATE_LIMIT": "1000",
        "TRACKER_CALLBACK_CONFIRM": "off",
        "TRACKER_API_TOKENS": TOKEN,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": AK,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
    }


async def throughput(
    kind: str,
    postgres_url: str | None,
    workdir: Path,
    processes: Processes,
    endpoints: tuple[str, str],
    messages: int,
    rounds: int,
) -> list[Run]:
    vod_url, mns_url = endpoints
    client = MnsClient(mns_url, StaticCredentials(StaticKey(AK, SECRET)))
    runs: list[Run] = []
    try:
        for number in range(1, rounds + 1):
            await fill(client, messages)
            stop = asyncio.Event()
            loops = [asyncio.create_task(bare_loop(mns_url, stop)) for _ in range(POLLERS)]
            seconds = await drain_time(client, messages)
            stop.set()
            await asyncio.gather(*loops)
            runs.append(Run(kind, "bare", number, messages, seconds))
            print(f"  {kind} bare round {number}: {messages / seconds:,.0f}/s", file=sys.stderr)

            database_url = await asyncio.to_thread(fresh_database, kind, postgres_url, workdir)
            await fill(client, messages)
            port = free_port()
            server = processes.start(
                "serve", "--no-scheduler", env=serve_env(database_url, port, mns_url, vod_url)
            )
            seconds = await drain_time(client, messages)
            processes.stop(server)
            rows = await count_rows(database_url)
            if rows < messages:
                raise RuntimeError(f"{rows} rows stored for {messages} messages deleted")
            runs.append(Run(kind, "tracker", number, messages, seconds))
            print(f"  {kind} tracker round {number}: {messages / seconds:,.0f}/s", file=sys.stderr)
    finally:
        await client.close()
    return runs


async def latency(
    kind: str,
    postgres_url: str | None,
    workdir: Path,
    processes: Processes,
    endpoints: tuple[str, str],
    samples: int,
) -> list[float]:
    """Milliseconds from the event written to the queue to the job shown finished."""
    vod_url, mns_url = endpoints
    database_url = await asyncio.to_thread(fresh_database, kind, postgres_url, workdir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = processes.start(
        "serve", "--no-scheduler", env=serve_env(database_url, port, mns_url, vod_url)
    )
    client = MnsClient(mns_url, StaticCredentials(StaticKey(AK, SECRET)))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    measured: list[float] = []
    try:
        await wait_http(f"{url}/readyz")
        async with aiohttp.ClientSession(url, headers=headers) as http:
            for n in range(samples):
                media = f"lat-{n}-{uuid.uuid4().hex[:6]}"
                body = {"media_id": media, "types": ["AIVideoTag"]}
                async with http.post("/jobs", json=body) as response:
                    job_id = (await response.json())["jobs"][0]["job_id"]
                await asyncio.sleep(0.05)  # light load: nothing else in flight
                started = time.perf_counter()
                await client.send(QUEUE, [event(job_id, media)])
                while True:
                    async with http.get(f"/jobs/{job_id}") as response:
                        state = (await response.json())["state"]
                    if state == "succeeded":
                        break
                    if time.perf_counter() - started > 10:
                        raise RuntimeError(f"job {job_id} not finished 10 s after its event")
                    await asyncio.sleep(0.01)  # often enough; not so often it loads the tracker
                measured.append((time.perf_counter() - started) * 1000)
    finally:
        await client.close()
        processes.stop(server)
    return measured


def report(runs: list[Run], latencies: dict[str, list[float]], args: argparse.Namespace) -> str:
    lines = [
        f"## MNS consumption ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"{os.cpu_count()} cores ({platform.machine()}, {platform.python_version()}); "
        f"{args.messages} AI events pre-filled per run, {POLLERS} pollers on each side, "
        f"{args.rounds} interleaved rounds; queue API of `tracker fake-vod` in its own process.",
        "",
        "| database | target | events/s (median) | vs bare |",
        "|---|---|---|---|",
    ]
    for kind in dict.fromkeys(run.db for run in runs):
        bare = statistics.median(r.rate for r in runs if r.db == kind and r.target == "bare")
        for target in ("bare", "tracker"):
            rate = statistics.median(r.rate for r in runs if r.db == kind and r.target == target)
            lines.append(f"| {kind} | {target} | {rate:,.0f} | {rate / bare:.2f} |")
    lines += [
        "",
        "Queue -> job visible in `GET /jobs/{id}`, one event at a time:",
        "",
        "| database | samples | p50 ms | p90 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for kind, values in latencies.items():
        lines.append(
            f"| {kind} | {len(values)} | {percentile(values, 0.5):.1f} | "
            f"{percentile(values, 0.9):.1f} | {max(values):.1f} |"
        )
    lines += ["", "Raw runs:", "", "| database | target | round | seconds | events/s |"]
    lines.append("|---|---|---|---|---|")
    for run in runs:
        lines.append(
            f"| {run.db} | {run.target} | {run.round} | {run.seconds:.2f} | {run.rate:,.0f} |"
        )
    command = "python benchmarks/mns.py" + (" --postgres-url <url>" if args.postgres_url else "")
    command += f" --messages {args.messages} --rounds {args.rounds} --pollers {args.pollers}"
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    global POLLERS
    POLLERS = args.pollers
    processes = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="bench-mns-"))
    vod_port, mns_port = free_port(), free_port()
    try:
        processes.start(
            "fake-vod",
            "--port",
            str(vod_port),
            "--mns-port",
            str(mns_port),
            "--mns-queue",
            QUEUE,
            "--delay",
            "3600",  # jobs never finish by themselves: the benchmark writes their events
            env={"ALIBABA_CLOUD_ACCESS_KEY_ID": AK, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET},
        )
        vod_url, mns_url = f"http://127.0.0.1:{vod_port}", f"http://127.0.0.1:{mns_port}"
        await wait_http(f"{mns_url}/queues/{QUEUE}")
        kinds = ["sqlite"] + (["postgresql"] if args.postgres_url else [])
        runs: list[Run] = []
        latencies: dict[str, list[float]] = {}
        for kind in kinds:
            runs += await throughput(
                kind,
                args.postgres_url,
                workdir,
                processes,
                (vod_url, mns_url),
                args.messages,
                args.rounds,
            )
            latencies[kind] = await latency(
                kind, args.postgres_url, workdir, processes, (vod_url, mns_url), args.samples
            )
        print(report(runs, latencies, args))
    finally:
        processes.stop_all()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--pollers", type=int, default=POLLERS)
    asyncio.run(main(parser.parse_args()))
