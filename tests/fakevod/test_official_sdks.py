"""The official VOD SDKs, unchanged, against the simulator on loopback (vod-reference section 5)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tracker.fakevod import FakeVod, Faults

AK, SECRET = "LTAI5tFakeKeyId0001", "FakeSecretForTheSimulator0001"
CONFIG = json.dumps({"AIVideoTag": {"AnalyseTypes": "ASR,OCR"}})
USER_DATA = json.dumps({"Extend": {"ref": "a b*c~", "title": "测试 video"}})


@pytest.fixture
async def fake() -> AsyncIterator[FakeVod]:
    vod = FakeVod(access_key_id=AK, access_key_secret=SECRET, seed=3, faults=Faults(delay=0.05))
    await vod.start()
    yield vod
    await vod.stop()


def port_of(fake: FakeVod) -> int:
    return int(fake.url.rsplit(":", 1)[1])


# --- A) legacy SDK: aliyun-python-sdk-core + aliyun-python-sdk-vod ---


def legacy_client(fake: FakeVod, secret: str = SECRET) -> Any:
    from aliyunsdkcore.client import AcsClient

    return AcsClient(AK, secret, "cn-shanghai", port=port_of(fake), auto_retry=False)


def legacy_call(client: Any, request: Any) -> dict[str, Any]:
    request.set_endpoint("127.0.0.1")
    request.set_protocol_type("http")
    request.set_accept_format("JSON")
    try:
        return json.loads(client.do_action_with_exception(request))  # type: ignore[no-any-return]
    finally:
        # Its pooled connection is closed here, not whenever the collector finds the client
        # (the SDK closes its session in __del__), which warned in whatever test ran then.
        client.session.close()


def legacy_submit(fake: FakeVod, secret: str = SECRET) -> dict[str, Any]:
    from aliyunsdkvod.request.v20170321.SubmitAIJobRequest import SubmitAIJobRequest

    request = SubmitAIJobRequest()
    request.set_MediaId("media-legacy")
    request.set_Types("AIVideoTag,AIMediaDNA")
    request.set_Config(CONFIG)
    request.set_UserData(USER_DATA)
    return legacy_call(legacy_client(fake, secret), request)


def legacy_list(fake: FakeVod, job_ids: list[str]) -> dict[str, Any]:
    from aliyunsdkvod.request.v20170321.ListAIJobRequest import ListAIJobRequest

    request = ListAIJobRequest()
    request.set_JobIds(",".join(job_ids))
    return legacy_call(legacy_client(fake), request)


# --- B) and C) current SDK: alibabacloud-vod20170321, V3 by default or v2 (= v1 HMAC-SHA1) ---


def tea_client(fake: FakeVod, algorithm: str | None, secret: str = SECRET) -> Any:
    from alibabacloud_tea_openapi.utils_models import Config
    from alibabacloud_vod20170321.client import Client

    config = Config(
        access_key_id=AK,
        access_key_secret=secret,
        region_id="cn-shanghai",
        endpoint=f"127.0.0.1:{port_of(fake)}",
        protocol="http",
    )
    if algorithm:
        config.signature_algorithm = algorithm
    return Client(config)


def tea_submit(fake: FakeVod, algorithm: str | None, secret: str = SECRET) -> dict[str, Any]:
    from alibabacloud_vod20170321 import models

    response = tea_client(fake, algorithm, secret).submit_aijob(
        models.SubmitAIJobRequest(
            media_id="media-tea", types="AIVideoTag,AIMediaDNA", config=CONFIG, user_data=USER_DATA
        )
    )
    return response.body.to_map()  # type: ignore[no-any-return]


def tea_list(fake: FakeVod, algorithm: str | None, job_ids: list[str]) -> dict[str, Any]:
    from alibabacloud_vod20170321 import models

    response = tea_client(fake, algorithm).list_aijob(
        models.ListAIJobRequest(job_ids=",".join(job_ids))
    )
    return response.body.to_map()  # type: ignore[no-any-return]


VARIANTS: dict[str, tuple[Callable[..., dict[str, Any]], Callable[..., dict[str, Any]]]] = {
    "legacy-core": (legacy_submit, legacy_list),
    "tea-v3": (lambda f, **k: tea_submit(f, None, **k), lambda f, ids: tea_list(f, None, ids)),
    "tea-v2": (lambda f, **k: tea_submit(f, "v2", **k), lambda f, ids: tea_list(f, "v2", ids)),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_official_sdk_submits_and_lists(fake: FakeVod, variant: str) -> None:
    submit, list_jobs = VARIANTS[variant]
    submitted = await asyncio.to_thread(submit, fake)
    jobs = submitted["AIJobList"]["AIJob"]
    assert [j["Type"] for j in jobs] == ["AIVideoTag", "AIMediaDNA"]
    assert {j["JobId"] for j in jobs} == set(fake.jobs)
    assert fake.submit_calls == 1
    # The simulator parsed the parameters exactly as sent, UTF-8 and reserved characters included.
    assert next(iter(fake.jobs.values())).extend == json.dumps(
        {"ref": "a b*c~", "title": "测试 video"}, ensure_ascii=False, separators=(",", ":")
    )

    await fake.idle(5)
    ids = [j["JobId"] for j in jobs]
    listed = await asyncio.to_thread(list_jobs, fake, [*ids, "0" * 32])
    statuses = {j["JobId"]: j["Status"] for j in listed["AIJobList"]["AIJob"]}
    assert statuses == {i: "success" for i in ids}
    assert listed["NonExistAIJobIds"]["String"] == ["0" * 32]


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_official_sdk_with_wrong_secret_is_refused(fake: FakeVod, variant: str) -> None:
    submit, _ = VARIANTS[variant]
    with pytest.raises(Exception) as caught:  # noqa: PT011 - each SDK has its own class
        await asyncio.to_thread(submit, fake, secret="WrongSecret")
    error = caught.value
    if variant == "legacy-core":
        # SDK-core compares the gateway's echoed string to sign with its own; when they agree it
        # blames the secret: proof that the simulator signed exactly what the SDK sent.
        assert error.get_error_code() == "InvalidAccessKeySecret"  # type: ignore[attr-defined]
    else:
        assert error.code == "SignatureDoesNotMatch"  # type: ignore[attr-defined]
    assert fake.jobs == {}
    assert fake.refused == {"SignatureDoesNotMatch": 1}


# --- ListJobInfo and GetJobDetail (SDK-tea 3.4 and newer; vod-joblookup-reference.md 6) ---


@pytest.mark.parametrize("algorithm", [None, "v2"])
async def test_tea_sdk_lists_a_media_s_jobs_and_their_details(
    fake: FakeVod, algorithm: str | None
) -> None:
    from alibabacloud_vod20170321 import models

    submitted = await asyncio.to_thread(tea_submit, fake, algorithm)
    ids = {j["JobId"]: j["Type"] for j in submitted["AIJobList"]["AIJob"]}
    client = tea_client(fake, algorithm)

    listed = await asyncio.to_thread(
        client.list_job_info, models.ListJobInfoRequest(media_id="media-tea", job_type="ai")
    )
    body = listed.body
    assert (body.media_id, body.job_type) == ("media-tea", "ai")
    assert {item.job_id for item in body.job_info_list} == set(ids)
    assert all(isinstance(item.user_id, int) for item in body.job_info_list)
    assert all(item.create_time.endswith("Z") for item in body.job_info_list)

    for job_id, job_type in ids.items():
        before = fake.jobs[job_id].status  # the job moves on while the SDK asks
        detail = await asyncio.to_thread(
            client.get_job_detail, models.GetJobDetailRequest(job_id=job_id, job_type="ai")
        )
        ai = detail.body.aijob_detail
        assert (ai.job_id, ai.job_type, ai.media_id, ai.trigger) == (
            job_id,
            job_type,
            "media-tea",
            "Manual",
        )
        assert ai.status in {before, fake.jobs[job_id].status}
        assert detail.body.transcode_job_detail is None

    with pytest.raises(Exception) as caught:  # noqa: PT011 - the SDK's ClientException
        await asyncio.to_thread(
            client.list_job_info, models.ListJobInfoRequest(media_id="m", job_type="video")
        )
    assert caught.value.code == "InvalidParameter"  # type: ignore[attr-defined]


# --- GetVideoInfo and GetVideoInfos (vod-mediainfo-reference.md 5, 6) ---


def legacy_infos(fake: FakeVod, ids: list[str]) -> dict[str, Any]:
    from aliyunsdkvod.request.v20170321.GetVideoInfosRequest import GetVideoInfosRequest

    request = GetVideoInfosRequest()
    request.set_VideoIds(",".join(ids))
    return legacy_call(legacy_client(fake), request)


def legacy_info(fake: FakeVod, media_id: str) -> dict[str, Any]:
    from aliyunsdkvod.request.v20170321.GetVideoInfoRequest import GetVideoInfoRequest

    request = GetVideoInfoRequest()
    request.set_VideoId(media_id)
    return legacy_call(legacy_client(fake), request)


def tea_infos(fake: FakeVod, algorithm: str | None, ids: list[str]) -> dict[str, Any]:
    from alibabacloud_vod20170321 import models

    client = tea_client(fake, algorithm)
    response = client.get_video_infos(models.GetVideoInfosRequest(video_ids=",".join(ids)))
    # The SDK swallows a body of the wrong shape and leaves None (mediainfo 5): not here.
    assert response.body is not None
    body = response.body
    # Its own model, parsed: each item's Snapshots a plain list, the missing ids a list.
    assert all(isinstance(item.snapshots, list) for item in body.video_list)
    assert isinstance(body.non_exist_video_ids, list)
    return body.to_map()  # type: ignore[no-any-return]


def tea_info(fake: FakeVod, algorithm: str | None, media_id: str) -> dict[str, Any]:
    from alibabacloud_vod20170321 import models

    client = tea_client(fake, algorithm)
    response = client.get_video_info(models.GetVideoInfoRequest(video_id=media_id))
    assert response.body is not None
    assert response.body.video.snapshots.snapshot  # `{"Snapshot": [...]}`, an object here
    return response.body.to_map()  # type: ignore[no-any-return]


INFO_VARIANTS: dict[str, tuple[Callable[..., dict[str, Any]], Callable[..., dict[str, Any]]]] = {
    "legacy-core": (legacy_infos, legacy_info),
    "tea-v3": (lambda f, ids: tea_infos(f, None, ids), lambda f, m: tea_info(f, None, m)),
    "tea-v2": (lambda f, ids: tea_infos(f, "v2", ids), lambda f, m: tea_info(f, "v2", m)),
}


@pytest.mark.parametrize("variant", list(INFO_VARIANTS))
async def test_official_sdk_reads_durations_and_missing_media(fake: FakeVod, variant: str) -> None:
    infos, info = INFO_VARIANTS[variant]
    fake.media.add("short", 125.431)
    fake.media.add("uploading", None, status="Uploading")  # not analysed: no Duration
    fake.media.remove("gone")
    ids = ["short", "uploading", "gone", "drawn"]

    body = await asyncio.to_thread(infos, fake, ids)
    listed = {item["VideoId"]: item for item in body["VideoList"]}
    assert set(listed) == {"short", "uploading", "drawn"}
    assert body["NonExistVideoIds"] == ["gone"]
    assert listed["short"]["Duration"] == 125.431  # a JSON number, as VOD sends it
    assert "Duration" not in listed["uploading"]
    assert listed["uploading"]["Status"] == "Uploading"
    drawn = listed["drawn"]["Duration"]
    assert isinstance(drawn, float)
    assert 30 <= drawn <= 1800
    assert isinstance(listed["drawn"]["Size"], int)
    assert listed["drawn"]["CreationTime"].endswith("Z")

    one = await asyncio.to_thread(info, fake, "drawn")
    assert one["Video"]["VideoId"] == "drawn"
    assert one["Video"]["Duration"] == drawn  # stable per MediaId
    assert one["Video"]["Snapshots"]["Snapshot"]
    assert one["Video"]["RegionId"] == "cn-shanghai"


@pytest.mark.parametrize("variant", list(INFO_VARIANTS))
async def test_official_sdk_sees_vod_s_errors_for_media_info(fake: FakeVod, variant: str) -> None:
    infos, info = INFO_VARIANTS[variant]
    fake.media.remove("gone")
    with pytest.raises(Exception) as missing:  # noqa: PT011 - each SDK has its own class
        await asyncio.to_thread(info, fake, "gone")
    with pytest.raises(Exception) as too_many:  # noqa: PT011
        await asyncio.to_thread(infos, fake, [f"m{i}" for i in range(21)])
    if variant == "legacy-core":
        assert missing.value.get_error_code() == "InvalidVideo.NotFound"  # type: ignore[attr-defined]
        assert missing.value.get_http_status() == 404  # type: ignore[attr-defined]
        assert too_many.value.get_error_code() == "InvalidParameter"  # type: ignore[attr-defined]
    else:
        assert (missing.value.code, missing.value.status_code) == (  # type: ignore[attr-defined]
            "InvalidVideo.NotFound",
            404,
        )
        assert too_many.value.code == "InvalidParameter"  # type: ignore[attr-defined]
    assert fake.refused == {"InvalidVideo.NotFound": 1, "InvalidParameter": 1}


async def test_missing_media_rate_is_stable_and_refuses_submit_ai_job(fake: FakeVod) -> None:
    from alibabacloud_vod20170321 import models

    fake.faults.missing_media_rate, fake.faults.duration = 0.5, 600.0
    ids = [f"m{i}" for i in range(20)]
    first = await asyncio.to_thread(tea_infos, fake, None, ids)
    again = await asyncio.to_thread(legacy_infos, fake, ids)
    missing = first["NonExistVideoIds"]
    assert missing == again["NonExistVideoIds"]  # the same ids, whoever asks, how often
    assert 0 < len(missing) < len(ids)
    assert {item["Duration"] for item in first["VideoList"]} == {600.0}  # --duration

    client = tea_client(fake, None)
    with pytest.raises(Exception) as refused:  # noqa: PT011 - the SDK's ClientException
        await asyncio.to_thread(
            client.submit_aijob, models.SubmitAIJobRequest(media_id=missing[0], types="AIVideoTag")
        )
    assert refused.value.code == "InvalidVideo.NotFound"  # type: ignore[attr-defined]
    known = first["VideoList"][0]["VideoId"]
    submitted = await asyncio.to_thread(
        client.submit_aijob, models.SubmitAIJobRequest(media_id=known, types="AIVideoTag")
    )
    assert submitted.body.aijob_list.aijob[0].media_id == known
    assert [job.media_id for job in fake.jobs.values()] == [known]


async def test_durations_are_stable_per_seed() -> None:
    async def durations(seed: int) -> dict[str, float]:
        async with FakeVod(access_key_id=AK, access_key_secret=SECRET, seed=seed) as fake:
            body = await asyncio.to_thread(tea_infos, fake, None, ["a", "b", "c"])
        return {item["VideoId"]: item["Duration"] for item in body["VideoList"]}

    assert await durations(5) == await durations(5)
    assert await durations(5) != await durations(6)
