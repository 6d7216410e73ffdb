"""ListJobInfo and GetJobDetail in the client, against the simulator and on odd bodies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from tracker.config import Settings
from tracker.fakevod import FakeVod, Faults
from tracker.vod import VodClient, VodError, VodOutcomeUnknown
from tracker.vod.results import ai_job_detail, job_infos

AK, SECRET = "LTAIlookup", "LookupSecret1"


@pytest.fixture
async def fake() -> AsyncIterator[FakeVod]:
    vod = FakeVod(access_key_id=AK, access_key_secret=SECRET, seed=5, faults=Faults(delay=0.05))
    await vod.start()
    yield vod
    await vod.stop()


@pytest.fixture
async def vod(fake: FakeVod) -> AsyncIterator[VodClient]:
    settings = Settings(
        access_key_id=AK,
        access_key_secret=SecretStr(SECRET),
        vod_endpoint=fake.url,
        vod_rate_limit=1000.0,
    )
    async with VodClient(settings, backoff=0.01) as client:
        yield client


async def test_a_media_s_ai_jobs_are_listed_and_typed(fake: FakeVod, vod: VodClient) -> None:
    submitted = await vod.submit_ai_job("media-1", ["AIVideoTag", "AIMediaDNA"])
    await vod.submit_ai_job("media-2", ["AIVideoTag"])
    unsolicited = fake.emit_unsolicited("media-1")

    infos = await vod.list_job_info("media-1")
    ids = {job.job_id for job in submitted.jobs} | {unsolicited.job_id}
    assert {info.job_id for info in infos} == ids
    for info in infos:
        truth = fake.jobs[info.job_id]
        assert info.status == truth.status
        assert info.create_time == truth.creation_time.replace(microsecond=0)
    assert await vod.list_job_info("media-1", "transcode") == []
    assert await vod.list_job_info("no-such-media") == []

    for job in submitted.jobs:
        detail = await vod.get_job_detail(job.job_id)
        assert detail is not None
        assert (detail.type, detail.media_id, detail.trigger) == (job.type, "media-1", "Manual")
    detail = await vod.get_job_detail(unsolicited.job_id)
    assert detail is not None
    assert detail.trigger == "Auto"  # VOD ran it on its own: not one we submitted

    await fake.idle(5)
    done = {info.job_id: info for info in await vod.list_job_info("media-1")}
    assert {info.status for info in done.values()} == {"success"}
    assert all(info.complete_time is not None for info in done.values())


async def test_an_unknown_job_detail_is_vod_s_error(vod: VodClient) -> None:
    with pytest.raises(VodError) as caught:
        await vod.get_job_detail("0" * 32)
    assert caught.value.http_status == 404


async def test_a_lost_submit_answer_leaves_the_job_at_vod(fake: FakeVod, vod: VodClient) -> None:
    fake.faults.lose_submit_next = 1
    with pytest.raises(VodOutcomeUnknown):
        await vod.submit_ai_job("media-lost", ["AIVideoTag"])
    # The job exists, only the answer was lost; the next call is answered as usual.
    (job,) = fake.jobs.values()
    assert (job.media_id, job.type, fake.lost_submits) == ("media-lost", "AIVideoTag", 1)
    assert [i.job_id for i in await vod.list_job_info("media-lost")] == [job.job_id]
    assert len((await vod.submit_ai_job("media-ok", ["AIMediaDNA"])).jobs) == 1


async def test_lookups_keep_to_fifteen_calls_a_second(fake: FakeVod, vod: VodClient) -> None:
    fake.faults.qps = 15.0  # VOD's limit for each of these actions (joblookup 1, 2)
    began = time.monotonic()
    await asyncio.gather(*(vod.list_job_info(f"media-{n}") for n in range(16)))
    elapsed = time.monotonic() - began
    assert elapsed >= 0.95  # 16 evenly spaced calls at 15 per second span a second
    assert fake.refused == {}  # and none was throttled


def test_job_info_lists_are_read_leniently() -> None:
    item = {"JobId": "j1", "Status": "Success", "CreateTime": "2026-01-02T03:04:05Z"}
    assert [i.job_id for i in job_infos({"JobInfoList": [item]})] == ["j1"]
    assert [i.job_id for i in job_infos({"JobInfoList": {"JobInfo": [item]}})] == ["j1"]
    assert [i.job_id for i in job_infos({"JobInfoList": item})] == ["j1"]
    assert job_infos({}) == []
    assert job_infos({"JobInfoList": None}) == []
    assert job_infos({"JobInfoList": [{"Status": "init"}, "junk"]}) == []
    (info,) = job_infos({"JobInfoList": [{**item, "UserId": 139109000084930}]})
    assert info.status == "success"
    assert info.create_time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert info.complete_time is None


def test_job_detail_is_read_from_its_ai_block_only() -> None:
    assert ai_job_detail({"JobType": "transcode", "TranscodeJobDetail": {"JobId": "t"}}) is None
    assert ai_job_detail({"AIJobDetail": {}}) is None
    detail = ai_job_detail(
        {"AIJobDetail": {"JobId": "j", "JobType": "AIMediaDNA", "Status": "Analysing"}}
    )
    assert detail is not None
    assert (detail.type, detail.status, detail.trigger, detail.create_time) == (
        "AIMediaDNA",
        "analysing",
        None,
        None,
    )
