"""`tracker submit` as a process: interrupted (Ctrl-C, twice, or kill -9) and resumed, and two
at once on one file; nothing is submitted twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.submit.simulator import BOTH, KEY, SECRET, jobs_of, truth
from tracker.db import Database
from tracker.fakevod import FakeVod
from tracker.models import Job, JobState


async def _run_cli(
    settings_env: dict[str, str],
    path: Path,
    *,
    stop_after: int | None,
    sig: int,
    database: Database,
) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracker",
        "submit",
        "--types",
        ",".join(BOTH),
        "--from-file",
        str(path),
        "--concurrency",
        "8",
        env=settings_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    if stop_after is not None:
        async with asyncio.timeout(60):
            while True:
                async with database.session() as session:
                    done = await session.scalar(
                        select(func.count()).select_from(Job).where(Job.state == "processing")
                    )
                if (done or 0) >= stop_after:
                    break
                await asyncio.sleep(0.05)
        process.send_signal(sig)
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
async def test_an_interrupted_batch_resumes_with_only_what_is_left(
    sig: int, database_url: str, database: Database, fake: FakeVod, tmp_path: Path
) -> None:
    media = [f"media-{i:03d}" for i in range(300)]
    path = tmp_path / "media.txt"
    path.write_text("\n".join(media) + "\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "ALIBABA_"))},
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_VOD_ENDPOINT": fake.url,
        "TRACKER_VOD_RATE_LIMIT": "150",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
    }
    code, output = await _run_cli(env, path, stop_after=100, sig=sig, database=database)
    assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL), output
    # A killed client's last COMMIT may still land on the server: wait until nothing changes.
    after_kill = await jobs_of(database)
    for _ in range(20):
        await asyncio.sleep(0.25)
        again = await jobs_of(database)
        if [(j.id, j.state) for j in again] == [(j.id, j.state) for j in after_kill]:
            break
        after_kill = again
    first_calls = fake.submit_calls
    assert 50 <= first_calls < 300
    started = {job.media_id for job in after_kill}
    if sig == signal.SIGINT:
        # Stopped cleanly: everything started was recorded, nothing left in flight.
        assert {job.state for job in after_kill} == {JobState.PROCESSING}
        assert "interrupted" in output
    else:
        # Killed: at most the in-flight ones are left `submitting` (unknown to us).
        assert sum(job.state == JobState.SUBMITTING for job in after_kill) <= 2 * 8

    code, output = await _run_cli(env, path, stop_after=None, sig=sig, database=database)
    assert code == 0, output
    assert fake.submit_calls - first_calls == len(set(media) - started)
    jobs = await jobs_of(database)
    assert Counter((j.media_id, j.type) for j in jobs) == {(m, t): 1 for m in media for t in BOTH}
    assert set(truth(fake).values()) == {1}
    assert f"{len(started) * 2} skipped" in output


# --- heavier variants: `pytest -m slow` ---------------------------------------------------------


@pytest.mark.slow
async def test_two_submit_commands_on_one_file(
    database_url: str, database: Database, fake: FakeVod, tmp_path: Path
) -> None:
    media = [f"media-{i:04d}" for i in range(1500)]
    path = tmp_path / "media.csv"
    path.write_text("media_id,types\n" + "".join(f'{m},"{",".join(BOTH)}"\n' for m in media))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "ALIBABA_"))},
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_VOD_ENDPOINT": fake.url,
        "TRACKER_VOD_RATE_LIMIT": "5000",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
    }
    argv = [sys.executable, "-m", "tracker", "submit", "--from-file", str(path)]
    processes = [
        await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        for _ in range(2)
    ]
    async with asyncio.timeout(300):
        outputs = [(await p.communicate())[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert fake.submit_calls == len(media)
    assert set(truth(fake).values()) == {1}
    jobs = await jobs_of(database)
    assert Counter((j.media_id, j.type) for j in jobs) == {(m, t): 1 for m in media for t in BOTH}


async def test_a_second_ctrl_c_abandons_the_calls_in_flight_as_submit_unknown(
    database_url: str, database: Database, fake: FakeVod, tmp_path: Path
) -> None:
    # VOD does the work, then answers late
    fake.faults.slow_rate, fake.faults.slow_seconds = 1.0, 4.0
    path = tmp_path / "media.txt"
    path.write_text("".join(f"media-{i}\n" for i in range(20)))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "ALIBABA_"))},
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_VOD_ENDPOINT": fake.url,
        "TRACKER_VOD_TIMEOUT": "30s",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
    }
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "tracker", "submit", "--types", "AIMediaDNA"],
        *["--from-file", str(path), "--concurrency", "4"],
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    for _ in range(600):  # all four in flight: VOD holds their answers
        if fake.submit_calls >= 4:
            break
        await asyncio.sleep(0.05)
    process.send_signal(signal.SIGINT)
    await asyncio.sleep(0.3)
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(10):  # well before VOD's late answers
        output, _ = await process.communicate()
    assert process.returncode == 130, output.decode()
    jobs = await jobs_of(database)
    assert len(jobs) == 4
    assert {(j.state, j.job_id) for j in jobs} == {(JobState.SUBMIT_UNKNOWN, None)}
    assert "unknown" in output.decode()
    assert fake.submit_calls == 4  # VOD has them: a callback will resolve each one
