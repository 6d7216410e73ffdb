"""Batches of `tracker submit`: input files read, dry runs, throttling and refusals over a
thousand media, two batches at once."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest

from tests.submit.simulator import BOTH, RefusingVod, jobs_of, truth, vod_settings
from tracker.cli.reporters import PlainReporter
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.errors import BadRequest
from tracker.fakevod import FakeVod
from tracker.models import JobState
from tracker.submit.batch import Item, read_items, run_batch
from tracker.submit.claims import SubmitRequest
from tracker.submit.estimate import dry_run
from tracker.submit.service import TypeOutcome, submit_media
from tracker.vod import VodClient


def test_read_items_parses_lines_and_csv() -> None:
    lines = [
        "media_id,types",
        "m1",
        "# a comment",
        "",
        'm2,"AIVideoTag,AIMediaDNA"',
        "m3,AIMediaDNA",
        "m1,AIMediaDNA",
    ]
    assert read_items(lines, ("AIVideoTag",)) == [
        Item("m1", BOTH),
        Item("m2", BOTH),
        Item("m3", ("AIMediaDNA",)),
    ]
    with pytest.raises(BadRequest) as caught:
        read_items(["m1,Bogus", "m2", "bad id,AIVideoTag"], None, source="f.csv")
    message = caught.value.message
    assert "f.csv:1: types: unknown Bogus" in message
    assert "f.csv:2: no types" in message
    assert "f.csv:3: media_id" in message


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


async def test_dry_run_reports_without_calling_or_writing(
    database: Database, vod: VodClient, fake: FakeVod, clock: FrozenClock
) -> None:
    await submit_media(database, vod, SubmitRequest("m1", ("AIVideoTag",)), clock)
    out = Lines()
    items = [Item("m1", BOTH), Item("m2", ("AIMediaDNA",))]
    tally = await dry_run(database, items, PlainReporter(out, dry_run=True), force=False)
    assert tally.jobs == {TypeOutcome.SUBMITTED: 2, TypeOutcome.SKIPPED: 1}
    assert "skipped m1 AIVideoTag already processing" in out.lines
    assert "would-submit m1 AIMediaDNA would submit" in out.lines
    assert "would-submit m2 AIMediaDNA would submit" in out.lines
    assert fake.submit_calls == 1
    assert len(await jobs_of(database)) == 1


async def test_batch_of_1000_with_throttling_and_refusals(
    database: Database, vod: VodClient, fake: RefusingVod, clock: FrozenClock
) -> None:
    media = [f"media-{i:04d}" for i in range(1000)]
    fake.refuse = set(media[::20])  # 5%
    fake.throttle_every = 5  # VOD throttles; the client and the submitter wait it out
    out = Lines()
    tally = await run_batch(
        database,
        vod,
        [Item(m, BOTH) for m in media],
        clock,
        PlainReporter(out),
        concurrency=32,
        throttle_pause=0.2,
    )
    assert fake.refused.get("Throttling.User", 0) > 0, "the test must exercise throttling"
    assert tally.media == 1000
    assert tally.jobs == {TypeOutcome.SUBMITTED: 1900, TypeOutcome.FAILED: 100}
    assert tally.reasons == {(TypeOutcome.FAILED, "Forbidden.RAM"): 100}
    failed_lines = [line for line in out.lines if line.startswith("failed ")]
    assert len(failed_lines) == 50
    assert all("Forbidden.RAM" in line and "RequestId" in line for line in failed_lines)

    # The truth: one SubmitAIJob per accepted media, one VOD job per media and type.
    assert fake.submit_calls == 950
    assert set(truth(fake).values()) == {1}
    jobs = await jobs_of(database)
    assert Counter((j.media_id, j.type) for j in jobs) == {(m, t): 1 for m in media for t in BOTH}
    for job in jobs:
        if job.media_id in fake.refuse:
            assert (job.state, job.code) == (JobState.SUBMIT_FAILED, "Forbidden.RAM")
        else:
            assert job.state == JobState.PROCESSING
            assert job.job_id is not None
            assert (fake.jobs[job.job_id].media_id, fake.jobs[job.job_id].type) == (
                job.media_id,
                job.type,
            )


async def test_two_batches_at_once_submit_each_media_once(
    database_url: str, vod: VodClient, fake: FakeVod, clock: FrozenClock
) -> None:
    items = [Item(f"m{i}", BOTH) for i in range(200)]
    databases = [Database(database_url), Database(database_url)]
    try:
        tallies = await asyncio.gather(
            *(
                run_batch(db, vod, items, clock, PlainReporter(Lines()), concurrency=8)
                for db in databases
            )
        )
    finally:
        for db in databases:
            await db.dispose()
    assert fake.submit_calls == 200
    assert set(truth(fake).values()) == {1}
    assert sum(t.jobs[TypeOutcome.SUBMITTED] for t in tallies) == 400
    assert sum(t.jobs[TypeOutcome.SKIPPED] for t in tallies) == 400


# --- heavier variants: `pytest -m slow` ---------------------------------------------------------


@pytest.mark.slow
async def test_big_batch_against_the_simulators_own_throttling_and_slow_answers(
    database_url: str, database: Database, fake: RefusingVod, clock: FrozenClock
) -> None:
    media = [f"media-{i:05d}" for i in range(2000)]
    fake.refuse = set(media[::20])
    fake.faults.qps = 50  # VOD's token bucket, well under what the client would send
    fake.faults.slow_rate, fake.faults.slow_seconds = 0.005, 2.0
    settings = vod_settings(database_url, fake.url, vod_timeout=timedelta(seconds=1))
    async with VodClient(settings) as client:
        tally = await run_batch(
            database,
            client,
            [Item(m, BOTH) for m in media],
            clock,
            PlainReporter(Lines()),
            concurrency=48,
            throttle_pause=0.5,
        )
    assert fake.refused.get("Throttling.User", 0) > 0
    jobs = await jobs_of(database)
    assert Counter((j.media_id, j.type) for j in jobs) == {(m, t): 1 for m in media for t in BOTH}
    assert set(truth(fake).values()) == {1}
    unknown = {j.media_id for j in jobs if j.state == JobState.SUBMIT_UNKNOWN}
    assert tally.jobs[TypeOutcome.UNKNOWN] == 2 * len(unknown)
    assert tally.jobs[TypeOutcome.FAILED] == 200
    # Every media VOD has a job for is either recorded with its JobId or `submit_unknown`.
    for job in jobs:
        if job.state == JobState.PROCESSING:
            assert job.job_id in fake.jobs
        else:
            assert job.state in (JobState.SUBMIT_FAILED, JobState.SUBMIT_UNKNOWN)
