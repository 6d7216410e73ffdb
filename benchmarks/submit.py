"""Benchmark 2: `tracker submit --from-file` against the VOD simulator.

1. Throttling off: N media through `tracker submit` (claim, SubmitAIJob, record, per media)
   against a bare aiohttp client sending the same signed SubmitAIJob calls with no database.
   The ratio is the tracker's throughput over the bare client's; the difference per media is
   the tracker's overhead. Both run as their own process against the same simulator.
2. At VOD's 30/s limit: the simulator throttles above 30/s (as VOD does); the tracker's rate
   limiter must keep under it: achieved rate within 5% of the limit and no call refused.

    python benchmarks/submit.py                      # 10,000 media, SQLite, both parts
    python benchmarks/submit.py --count 1000 --limited-count 300   # a short run
    python benchmarks/submit.py --database-url postgresql+asyncpg://...

Prints a Markdown table with the raw numbers, the core count and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

KEY, SECRET = "bench-key-id", "bench-key-secret"
TYPES = "AIVideoTag,AIMediaDNA"


def _simulator(qps: float | None) -> Any:
    from tracker.fakevod import FakeVod, Faults

    class TimedVod(FakeVod):
        """Records when each SubmitAIJob was accepted, to measure the achieved rate."""

        accepted: list[float]

        def _submit(self, params: Mapping[str, str]) -> dict[str, Any]:
            answer: dict[str, Any] = super()._submit(params)
            self.accepted.append(time.monotonic())
            return answer

    fake = TimedVod(
        access_key_id=KEY, access_key_secret=SECRET, seed=8, faults=Faults(delay=0.5, qps=qps)
    )
    fake.accepted = []
    return fake


async def _bare_client(url: str, count: int, concurrency: int) -> None:
    """The baseline: signed SubmitAIJob calls from a plain aiohttp session, nothing stored."""
    import uuid
    from datetime import UTC, datetime

    import aiohttp

    from tracker.vod import sign_v1

    def form(media_id: str) -> dict[str, str]:
        params = {
            "Action": "SubmitAIJob",
            "Version": "2017-03-21",
            "Format": "JSON",
            "AccessKeyId": KEY,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "SignatureNonce": uuid.uuid4().hex,
            "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "RegionId": "cn-shanghai",
            "MediaId": media_id,
            "Types": TYPES,
        }
        params["Signature"] = sign_v1("POST", params, SECRET)
        return params

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

        async def work() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                async with http.post(url + "/", data=form(f"bare-{i:07d}")) as response:
                    body = await response.json()
                    if response.status != 200:
                        raise RuntimeError(f"bare client refused: {body}")

        await asyncio.gather(*(work() for _ in range(concurrency)))


async def _run(argv: list[str], env: Mapping[str, str]) -> float:
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *argv, env=dict(env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        tail = output.decode()[-2000:]
        raise RuntimeError(f"{shlex.join(argv[:4])}... exited {process.returncode}:\n{tail}")
    return elapsed


def _environment(url: str, database_url: str, rate_limit: float) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "ALIBABA_"))}
    return clean | {
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_VOD_ENDPOINT": url,
        "TRACKER_VOD_RATE_LIMIT": str(rate_limit),
        "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
    }


async def _reset(database_url: str) -> None:
    """An empty schema at head (PostgreSQL is dropped and rebuilt: use a database of its own)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from tracker.db import is_sqlite, upgrade_async

    if not is_sqlite(database_url):
        engine = create_async_engine(database_url)
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
        await engine.dispose()
    await upgrade_async(database_url)


async def _tracker_submit(
    url: str, database_url: str, media: list[str], concurrency: int, rate_limit: float, work: Path
) -> float:
    path = work / f"media-{len(media)}-{time.monotonic_ns()}.txt"
    path.write_text("\n".join(media) + "\n")
    await _reset(database_url)
    argv = [sys.executable, "-m", "tracker", "submit", "--types", TYPES, "--from-file", str(path)]
    argv += ["--concurrency", str(concurrency)]
    return await _run(argv, _environment(url, database_url, rate_limit))


async def throttling_off(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    fake = _simulator(qps=None)
    url = await fake.start()
    try:
        bare, tracked = [], []
        for run in range(args.runs):  # interleaved: the machine is shared and noisy
            media = [f"r{run}-m{i:07d}" for i in range(args.count)]
            argv = [sys.executable, __file__, "--bare-client", url, str(args.count)]
            argv += ["--concurrency", str(args.concurrency)]
            bare.append(await _run(argv, os.environ))
            tracked.append(
                await _tracker_submit(url, args.database_url, media, args.concurrency, 1e6, work)
            )
        expected = args.runs * args.count * 2
        if fake.submit_calls != expected:
            raise RuntimeError(f"simulator saw {fake.submit_calls} calls, expected {expected}")
    finally:
        await fake.stop()
    bare_rate = args.count / statistics.median(bare)
    tracker_rate = args.count / statistics.median(tracked)
    return {
        "bare_s": bare,
        "tracker_s": tracked,
        "bare_rate": bare_rate,
        "tracker_rate": tracker_rate,
        "ratio": tracker_rate / bare_rate,
        "overhead_ms": (1 / tracker_rate - 1 / bare_rate) * 1000,
    }


async def at_limit(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    fake = _simulator(qps=args.limit)
    url = await fake.start()
    try:
        media = [f"limited-{i:07d}" for i in range(args.limited_count)]
        elapsed = await _tracker_submit(
            url, args.database_url, media, args.concurrency, args.limit, work
        )
        accepted = sorted(fake.accepted)
        refused = sum(fake.refused.values())
    finally:
        await fake.stop()
    # Rate over the accepted calls, first to last: what VOD would see.
    achieved = (len(accepted) - 1) / (accepted[-1] - accepted[0]) if len(accepted) > 1 else 0.0
    return {
        "elapsed_s": elapsed,
        "accepted": len(accepted),
        "refused": refused,
        "achieved_rate": achieved,
        "within_5pct": abs(achieved - args.limit) <= 0.05 * args.limit,
    }


def report(args: argparse.Namespace, off: dict[str, Any], limited: dict[str, Any] | None) -> str:
    backend = "SQLite" if args.database_url.startswith("sqlite") else "PostgreSQL"
    command = "python benchmarks/submit.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:] if "://" not in a
    )
    lines = [
        f"### Submission (`tracker submit --from-file`), {backend}, {os.cpu_count()} cores",
        "",
        "| measure | bare aiohttp client | tracker submit | ratio |",
        "|---|---|---|---|",
        f"| {args.count} media, throttling off, concurrency {args.concurrency} "
        f"(median of {args.runs}) | {off['bare_rate']:.0f} media/s | "
        f"{off['tracker_rate']:.0f} media/s | {off['ratio']:.2f} |",
        "",
        f"Tracker overhead per media: {off['overhead_ms']:.2f} ms "
        f"(claim + SubmitAIJob + record, process start included). Raw seconds: bare "
        f"{', '.join(f'{s:.2f}' for s in off['bare_s'])}; tracker "
        f"{', '.join(f'{s:.2f}' for s in off['tracker_s'])}.",
    ]
    if limited is not None:
        verdict = "yes" if limited["within_5pct"] and not limited["refused"] else "NO"
        lines += [
            "",
            f"At the {args.limit:.0f}/s limit ({args.limited_count} media, simulator throttling "
            f"above {args.limit:.0f}/s): achieved {limited['achieved_rate']:.2f}/s "
            f"({limited['achieved_rate'] / args.limit:.1%} of the limit), "
            f"{limited['accepted']} calls accepted, {limited['refused']} refused, "
            f"{limited['elapsed_s']:.1f} s in all. Within 5% and none refused: {verdict}.",
        ]
    lines += ["", f"Command: `{command}`"]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.database_url is None:
            args.database_url = f"sqlite+aiosqlite:///{work / 'bench.db'}"
        off = await throttling_off(args, work)
        limited = await at_limit(args, work) if args.limited_count else None
    print(report(args, off, limited))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="media, throttling off")
    parser.add_argument("--limited-count", type=int, default=10_000, help="media at the limit")
    parser.add_argument("--limit", type=float, default=30.0, help="VOD's SubmitAIJob QPS")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of each side")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--bare-client", nargs=2, metavar=("URL", "COUNT"), help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.bare_client:
        target, total = arguments.bare_client
        asyncio.run(_bare_client(target, int(total), arguments.concurrency))
    else:
        asyncio.run(main(arguments))
