"""`tracker submit --region` in a process of its own, signing with the simulators' rotating STS
credentials (ALIBABA_CLOUD_CREDENTIALS_URI) and TRACKER_VOD_ENDPOINTS naming two regions."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tracker.db import Database
from tracker.fakevod import FakeVod, Faults
from tracker.models import Job, JobState

KEY_ID, KEY_SECRET = "cli-key", "cli-secret"


@pytest.fixture
async def two_regions() -> AsyncIterator[dict[str, FakeVod]]:
    made = {
        region: FakeVod(
            access_key_id=KEY_ID,
            access_key_secret=KEY_SECRET,
            sts_ttl=60,
            faults=Faults(delay=0.05),
        )
        for region in ("cn-shanghai", "cn-beijing")
    }
    for fake in made.values():
        await fake.start()
    yield made
    for fake in made.values():
        await fake.stop()


async def run_submit(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracker",
        "submit",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def test_submit_takes_a_region(
    two_regions: dict[str, FakeVod], database_url: str, database: Database, tmp_path: Path
) -> None:
    shanghai, beijing = two_regions["cn-shanghai"], two_regions["cn-beijing"]
    # Both simulators accept the key pair; credentials come from one of them (one account).
    beijing.gateway._sts = shanghai.gateway._sts
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "ALIBABA_"))},
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_VOD_ENDPOINTS": f"cn-shanghai={shanghai.url},cn-beijing={beijing.url}",
        "ALIBABA_CLOUD_CREDENTIALS_URI": shanghai.credentials_uri,
    }
    code, output = await run_submit(env, "--types", "AIVideoTag", "--region", "cn-beijing", "b1")
    assert code == 0, output
    code, output = await run_submit(env, "--types", "AIVideoTag", "s1")
    assert code == 0, output
    assert [j.media_id for j in beijing.jobs.values()] == ["b1"]
    assert [j.media_id for j in shanghai.jobs.values()] == ["s1"]
    # Signed with STS: each submission asks GetVideoInfo, then SubmitAIJob.
    assert shanghai.gateway.sts_accepted + beijing.gateway.sts_accepted == 4
    async with database.session() as session:
        rows = {j.media_id: (j.region, j.state) for j in await session.scalars(select(Job))}
    assert rows == {
        "b1": ("cn-beijing", JobState.PROCESSING),
        "s1": ("cn-shanghai", JobState.PROCESSING),
    }
    # Tagging is not offered in Singapore: refused before anything is sent.
    code, output = await run_submit(
        env, "--types", "AIVideoTag", "--region", "ap-southeast-1", "x1"
    )
    assert code != 0
    assert "ap-southeast-1 does not offer AIVideoTag" in output
    assert shanghai.requests + beijing.requests == 4
