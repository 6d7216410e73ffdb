"""Where a callback's way to its job goes at a steady rate: the inbox's commits, the applier's
turns and its pauses, timed inside `tracker serve`, beside callback 200 -> visible.

The tracker runs in a subprocess with those three functions wrapped (nothing else changes); the
stream is `ingest.py`'s (signed callbacks at a fixed rate, every 10th polled in GET /jobs/{id}).
An applier that pauses while a steady stream is far from capacity shows here as pauses of
hundreds of milliseconds; a slow turn as turns near the gap between callbacks.

    python benchmarks/turns.py [--postgres-url postgresql+asyncpg://...] [--rate 100] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import free_port, fresh_database, percentile
from ingest import cpu_seconds, steady_stream, wait_port
from notify import Receivers, _subscribe, steady, tracker_env

# Run in the tracker's process: wrap, serve until SIGINT, then write what was timed.
WRAPPED = r"""
import json, os, sys, time
import tracker.ingest.applier as applier
import tracker.ingest.inbox as inbox
timed = []

def wrap(owner, name, kind, size):
    inner = getattr(owner, name)
    async def timed_call(*args, **kwargs):
        started = time.monotonic()
        result = await inner(*args, **kwargs)
        timed.append((kind, time.monotonic() - started, size(args, result)))
        return result
    setattr(owner, name, timed_call)

wrap(applier, "apply_pending", "apply", lambda args, done: done)
wrap(inbox.Inbox, "_write", "write", lambda args, _: len(args[2]))
wrap(applier.Applier, "pause", "pause", lambda args, _: 0)
import tracker.notify.recorder as recorder
import tracker.notify.relay as relay
wrap(relay.Relay, "run_once", "relay turn", lambda args, _: 0)
wrap(recorder.Recorder, "flush", "record", lambda args, _: 0)
from tracker.cli import main
sys.argv = ["tracker", "serve"]
try:
    main(standalone_mode=False)
finally:
    with open(os.environ["TURNS_OUT"], "w") as out:
        json.dump(timed, out)
"""


def run(url: str, rate: int, seconds: int, workdir: Path, subscribe: bool) -> str:
    port = free_port()
    out = workdir / "turns.json"
    process = subprocess.Popen(
        [sys.executable, "-c", WRAPPED],
        env=tracker_env(url, port, TURNS_OUT=str(out)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    receivers = Receivers(1, parse=True) if subscribe else None
    if receivers is not None:
        asyncio.run(_subscribe(url, receivers.urls))
    run_id = f"turns{time.time_ns()}"
    try:
        wait_port(port)
        base = f"http://127.0.0.1:{port}"
        cpu, began = cpu_seconds(process.pid), time.monotonic()
        if receivers is None:
            answered, visible, refused = asyncio.run(steady_stream(base, rate, seconds, run_id))
            lines = [
                f"| 200 | {len(answered)} | {_ms(answered)} | not 200: {len(refused)} |",
                f"| visible | {len(visible)} | {_ms(visible)} | every 10th, polled every 2 ms |",
            ]
        else:  # notify.py's stream: when each callback was answered 200, by job
            answered_at = asyncio.run(steady(base, rate, seconds, run_id))
            receivers.wait_for(len(answered_at), within=10)
            arrivals = receivers.arrivals()
            late = [(arrivals[j] - at) * 1000 for j, at in answered_at.items() if j in arrivals]
            lines = [f"| delivered | {len(late)} | {_ms(late)} | from the 200 |"]
        busy = (cpu_seconds(process.pid) - cpu) / (time.monotonic() - began)
        lines.append(f"| tracker's CPU | | | {100 * busy:.0f}% of a core |")
    finally:
        process.send_signal(signal.SIGINT)  # uvicorn ends, then the wrapper writes its timings
        process.wait(60)
        if receivers is not None:
            receivers.close()
    timed = json.loads(out.read_text())
    kinds = [("write", "events a batch"), ("apply", "events a turn"), ("pause", "")]
    kinds += [("relay turn", ""), ("record", "")] if subscribe else []
    for kind, what in kinds:
        spans = [seconds * 1000 for k, seconds, _ in timed if k == kind]
        sizes = [n for k, _, n in timed if k == kind]
        mean = f"{what}: {sum(sizes) / len(sizes):.1f}" if sizes and what else ""
        lines.append(
            f"| {kind} | {len(spans)} | {_ms(spans) if spans else '-'} | "
            f"{mean}; {sum(spans) / 1000:.2f} s in all |"
        )
    return "\n".join(lines)


def _ms(values: list[float]) -> str:
    return " / ".join(f"{percentile(values, q):.1f}" for q in (0.5, 0.9, 0.99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", default=os.environ.get("TRACKER_BENCH_POSTGRES_URL"))
    parser.add_argument("--rate", type=int, default=100, help="callbacks/s")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--subscribe", action="store_true", help="one subscription: callback 200 -> delivered"
    )
    args = parser.parse_args()
    kinds = ["sqlite"] + (["postgresql"] if args.postgres_url else [])
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            url = fresh_database(kind, args.postgres_url, Path(tmp))
            load = " ".join(f"{n:.2f}" for n in os.getloadavg())
            print(f"\n{kind}, {args.rate} callbacks/s for {args.seconds} s, load {load}")
            print("\n| what | count | p50 / p90 / p99 ms | |\n|---|---|---|---|")
            print(run(url, args.rate, args.seconds, Path(tmp), args.subscribe))


if __name__ == "__main__":
    main()
