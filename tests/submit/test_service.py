"""`submit_media` against the VOD simulator on loopback, on SQLite and PostgreSQL: JobIds
stored, duplicates skipped, refusals and unknown outcomes recorded, racing submitters and
callbacks."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tests.submit.simulator import BOTH, RefusingVod, jobs_of, truth, vod_settings
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.fakevod import FakeVod
from tracker.models import JobState, Origin, Submission
from tracker.submit.budget import Budget
from tracker.submit.claims import SubmitRequest, claim_many, record_many
from tracker.submit.service import TypeOutcome, submit_media
from tracker.transitions import Applied, apply_outcome
from tracker.vod import AIJob, SubmitResult, VodClient, VodUnreachable


async def test_submit_stores_each_job_id_in_processing(
    database: Database, vod: VodClient, fake: FakeVod, clock: FrozenClock
) -> None:
    done = await submit_media(database, vod, SubmitRequest("m1", BOTH), clock)
    assert done.outcomes == dict.fromkeys(BOTH, TypeOutcome.SUBMITTED)
    jobs = await jobs_of(database)
    assert {job.type for job in jobs} == set(BOTH)
    for job in jobs:
        assert job.state == JobState.PROCESSING
        assert job.job_id is not None
        assert fake.jobs[job.job_id].type == job.type
        assert fake.jobs[job.job_id].media_id == "m1"
    async with database.session() as session:
        submission = await session.scalar(select(Submission))
    assert submission is not None
    assert submission.state == "submitted"
    assert submission.request_id


async def test_live_or_done_jobs_are_skipped_and_force_resubmits(
    database: Database, vod: VodClient, fake: FakeVod, clock: FrozenClock
) -> None:
    await submit_media(database, vod, SubmitRequest("m1", ("AIVideoTag",)), clock)
    (first,) = await jobs_of(database)
    assert first.job_id is not None
    async with database.write() as session:
        success = _outcome(
            {"JobId": first.job_id, "EventType": "AIVideoTagComplete", "MediaId": "m1"}
        )
        applied = await apply_outcome(session, success, clock())
    assert applied is Applied.APPLIED

    again = await submit_media(database, vod, SubmitRequest("m1", BOTH), clock)
    assert again.outcomes == {
        "AIVideoTag": TypeOutcome.SKIPPED,
        "AIMediaDNA": TypeOutcome.SUBMITTED,
    }
    assert fake.submit_calls == 2
    assert sorted(fake.jobs[j.job_id].type for j in await jobs_of(database) if j.job_id) == [
        "AIMediaDNA",
        "AIVideoTag",
    ]

    forced = await submit_media(
        database, vod, SubmitRequest("m1", ("AIVideoTag",)), clock, force=True
    )
    assert forced.outcomes == {"AIVideoTag": TypeOutcome.SUBMITTED}
    tags = [j for j in await jobs_of(database) if j.type == "AIVideoTag"]
    assert len(tags) == 2
    assert tags[0].superseded_at is not None
    assert tags[0].state == JobState.SUCCEEDED
    assert tags[1].superseded_at is None
    assert tags[1].state == JobState.PROCESSING


def _outcome(event: Mapping[str, Any]) -> Any:
    from tracker.transitions import Outcome as VodOutcome

    return VodOutcome(
        job_id=event["JobId"],
        type=event["EventType"].removesuffix("Complete"),
        status=event.get("Status", "success"),
        media_id=event["MediaId"],
    )


async def test_refusal_is_submit_failed_with_vods_code_and_a_rerun_submits(
    database: Database, vod: VodClient, fake: RefusingVod, clock: FrozenClock
) -> None:
    fake.refuse = {"m1"}
    done = await submit_media(database, vod, SubmitRequest("m1", BOTH), clock)
    assert done.outcomes == dict.fromkeys(BOTH, TypeOutcome.FAILED)
    assert fake.submit_calls == 0
    for job in await jobs_of(database):
        assert job.state == JobState.SUBMIT_FAILED
        assert job.code == "Forbidden.RAM"
        assert job.message == "The user is not authorized for this media."
    async with database.session() as session:
        submission = await session.scalar(select(Submission))
    assert submission is not None
    assert (submission.state, submission.code) == ("submit_failed", "Forbidden.RAM")
    assert submission.request_id

    fake.refuse = set()
    retry = await submit_media(database, vod, SubmitRequest("m1", BOTH), clock)
    assert retry.outcomes == dict.fromkeys(BOTH, TypeOutcome.SUBMITTED)
    states = Counter(job.state for job in await jobs_of(database))
    assert states == {JobState.SUBMIT_FAILED: 2, JobState.PROCESSING: 2}


async def test_too_slow_an_answer_is_submit_unknown_never_a_duplicate(
    database_url: str, database: Database, fake: FakeVod, clock: FrozenClock
) -> None:
    fake.faults.slow_rate, fake.faults.slow_seconds = 1.0, 3.0
    settings = vod_settings(database_url, fake.url, vod_timeout=timedelta(seconds=0.5))
    # The duration known already (as the batch looks it up): only SubmitAIJob is slow here.
    request = SubmitRequest("m1", ("AIVideoTag",), duration_s=60.0)
    async with VodClient(settings) as client:
        done = await submit_media(database, client, request, clock)
        assert done.outcomes == {"AIVideoTag": TypeOutcome.UNKNOWN}
        (job,) = await jobs_of(database)
        assert (job.state, job.job_id) == (JobState.SUBMIT_UNKNOWN, None)
        assert fake.submit_calls == 1  # VOD did create it: the truth has one job

        again = await submit_media(database, client, SubmitRequest("m1", ("AIVideoTag",)), clock)
        assert again.outcomes == {"AIVideoTag": TypeOutcome.SKIPPED}
        assert fake.submit_calls == 1

    (real,) = fake.jobs.values()
    async with database.write() as session:
        event = {"JobId": real.job_id, "EventType": "AIVideoTagComplete", "MediaId": "m1"}
        resolved = await apply_outcome(session, _outcome(event), clock())
    assert resolved is Applied.RESOLVED
    (job,) = await jobs_of(database)
    assert job.job_id == real.job_id


async def test_unreachable_vod_is_submit_failed_with_a_clear_code(
    database_url: str, database: Database, clock: FrozenClock, unused_tcp_port: int
) -> None:
    settings = vod_settings(database_url, f"http://127.0.0.1:{unused_tcp_port}", vod_retries=0)
    budget = Budget({"AIVideoTag": 60_000})
    async with VodClient(settings) as client:
        # Unreachable for GetVideoInfo with a budget on a type: nothing is claimed at all.
        with pytest.raises(VodUnreachable, match="GetVideoInfo"):
            await submit_media(database, client, SubmitRequest("m1", BOTH), clock, budget=budget)
        assert await jobs_of(database) == []
        # Without a budget the duration only counts: claimed, then failed at SubmitAIJob.
        done = await submit_media(database, client, SubmitRequest("m1", BOTH), clock)
    assert done.outcomes == dict.fromkeys(BOTH, TypeOutcome.FAILED)
    assert {(j.state, j.code) for j in await jobs_of(database)} == {
        (JobState.SUBMIT_FAILED, "vod_unreachable")
    }


async def test_concurrent_submitters_of_one_media_call_vod_once(
    database_url: str, vod: VodClient, fake: FakeVod, clock: FrozenClock
) -> None:
    databases = [Database(database_url) for _ in range(3)]  # three processes' worth of writers
    try:
        results = await asyncio.gather(
            *(
                submit_media(databases[i % 3], vod, SubmitRequest("m1", BOTH), clock)
                for i in range(12)
            )
        )
        assert fake.submit_calls == 1
        assert truth(fake) == {("m1", "AIVideoTag"): 1, ("m1", "AIMediaDNA"): 1}
        assert len([r for r in results if r.sent]) == 1
        assert len(await jobs_of(databases[0])) == 2
    finally:
        for db in databases:
            await db.dispose()


async def test_a_callback_that_beats_the_record_is_kept(
    database: Database, clock: FrozenClock
) -> None:
    request = SubmitRequest("m1", BOTH)
    async with database.write() as session:
        (claim,) = await claim_many(session, [request], clock())
    # VOD's callback for the tag job arrives before the submitter stored the JobIds.
    async with database.write() as session:
        early = _outcome(
            {
                "JobId": "j-tag",
                "EventType": "AIVideoTagComplete",
                "Status": "success",
                "MediaId": "m1",
            }
        )
        assert await apply_outcome(session, early, clock()) is Applied.RESOLVED
    # ...and one for the DNA job arrives without a MediaId match: a row of its own.
    async with database.write() as session:
        stray = _outcome(
            {
                "JobId": "j-dna",
                "EventType": "AIMediaDNAComplete",
                "Status": "success",
                "MediaId": "",
            }
        )
        assert await apply_outcome(session, stray, clock()) is Applied.CREATED
    result = SubmitResult(
        "r1", [AIJob("j-tag", "m1", "AIVideoTag"), AIJob("j-dna", "m1", "AIMediaDNA")]
    )
    async with database.write() as session:
        await record_many(session, [(claim, result)], clock())
    jobs = {job.job_id: job for job in await jobs_of(database)}
    assert set(jobs) == {"j-tag", "j-dna"}
    assert jobs["j-tag"].state == JobState.SUCCEEDED
    assert jobs["j-dna"].state == JobState.SUCCEEDED
    assert jobs["j-dna"].origin == Origin.SUBMITTED
    assert jobs["j-dna"].submission_id == claim.submission_id
