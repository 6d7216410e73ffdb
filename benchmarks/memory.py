"""Benchmark 5: peak RSS of `tracker serve` after 100,000 callbacks, against a bare endpoint.

Starts the real `tracker serve` (SQLite in a temporary directory, signed callbacks, scheduler
on) and, as the baseline, the bare Starlette endpoint of benchmarks/ingest.py that parses the
same JSON without storing it. Each receives the same number of signed callbacks, each for a
different JobId, from 64 concurrent connections. Reports RSS after start-up, peak RSS (VmHWM)
and RSS at the end, read from /proc, with the ratio of the peaks.

    python benchmarks/memory.py [--callbacks 100000] [--database-url postgresql+asyncpg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

KEY = "MemKey123"
CALLBACK_URL = "https://tracker.example.com/callbacks/vod"
HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def body(n: int) -> bytes:
    return json.dumps(
        {
            "EventTime": "2026-01-02T03:04:05Z",
            "EventType": "AIVideoTagComplete",
            "JobId": f"mem{n:029d}",
            "MediaId": f"media{n}",
            "Status": "success",
            "Code": "0",
            "Message": "OK",
            "Data": json.dumps({"Keyword": [{"Times": ["3260"], "Tag": "cat"}]}),
        }
    ).encode()


async def send(url: str, count: int, connections: int) -> tuple[int, int]:
    """POST `count` signed callbacks; returns (answered 200, other)."""
    ok = other = 0
    queue = iter(range(count))
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            nonlocal ok, other
            for n in queue:
                ts = str(int(time.time()))
                sig = hashlib.md5(f"{CALLBACK_URL}|{ts}|{KEY}".encode()).hexdigest()
                headers = {"X-VOD-TIMESTAMP": ts, "X-VOD-SIGNATURE": sig}
                async with http.post(url, data=body(n), headers=headers) as response:
                    await response.read()
                    if response.status == 200:
                        ok += 1
                    else:
                        other += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    return ok, other


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not start")


def measure(command: list[str], env: dict[str, str], port: int, count: int) -> dict[str, float]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process)
        time.sleep(1)
        start = rss_kib(process.pid)["VmRSS"]
        began = time.perf_counter()
        ok, other = asyncio.run(send(f"{base}/callbacks/vod", count, 64))
        elapsed = time.perf_counter() - began
        time.sleep(2)  # let background work (the tracker's applier) settle
        end = rss_kib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {
        "start_mib": start / 1024,
        "peak_mib": end["VmHWM"] / 1024,
        "end_mib": end["VmRSS"] / 1024,
        "ok": ok,
        "other": other,
        "rps": count / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callbacks", type=int, default=100_000)
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{tmp}/memory.db"
        port = free_port()
        env = {
            **os.environ,
            "TRACKER_DATABASE_URL": url,
            "TRACKER_PORT": str(port),
            "TRACKER_CALLBACK_URL": CALLBACK_URL,
            "TRACKER_CALLBACK_AUTH_KEY": KEY,
        }
        if args.database_url:
            subprocess.run([sys.executable, "-m", "tracker", "db", "upgrade"], env=env, check=True)
        tracker = measure([sys.executable, "-m", "tracker", "serve"], env, port, args.callbacks)
        bare_port = free_port()
        bare = measure(
            [sys.executable, str(HERE / "ingest.py"), "serve", "bare", url, str(bare_port)],
            {**os.environ},
            bare_port,
            args.callbacks,
        )

    kind = "PostgreSQL" if args.database_url else "SQLite"
    print(f"### Memory after {args.callbacks:,} callbacks ({kind})\n")
    print(
        "| server | RSS after start (MiB) | peak RSS (MiB) | RSS at end (MiB)"
        " | 200s | other | req/s"
        " |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, row in (("bare endpoint (baseline)", bare), ("tracker serve", tracker)):
        print(
            f"| {name} | {row['start_mib']:.1f} | {row['peak_mib']:.1f} | {row['end_mib']:.1f} "
            f"| {row['ok']:,.0f} | {row['other']:,.0f} | {row['rps']:,.0f} |"
        )
    ratio = tracker["peak_mib"] / bare["peak_mib"]
    growth = tracker["peak_mib"] - tracker["start_mib"]
    print(
        f"\nPeak RSS ratio tracker/bare: **{ratio:.2f}**; the tracker grew {growth:.1f} MiB "
        f"over {args.callbacks:,} callbacks. {os.cpu_count()} cores. "
        f"Command: `{shlex.join(['python', 'benchmarks/memory.py', *sys.argv[1:]])}`\n"
    )


if __name__ == "__main__":
    main()
