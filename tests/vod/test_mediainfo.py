"""GetVideoInfo and GetVideoInfos in the client: against the simulator, and on odd bodies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from pydantic import SecretStr

from tracker.config import Settings
from tracker.fakevod import FakeVod, Faults
from tracker.vod import (
    INFOS_LIMIT,
    OWN_QPS,
    VodClient,
    VodError,
    duration_seconds,
    get_video_info,
    get_video_infos,
    shared_limiter,
)
from tracker.vod.mediainfo import video_info, video_infos

AK, SECRET = "LTAImediainfo", "MediaInfoSecret1"


class StringDurations(FakeVod):
    """A VOD that writes `Duration` as text, as GetMezzanineInfo's model types it (mediainfo 5)."""

    def _actions(self) -> dict[str, Any]:
        actions = super()._actions()
        plain = actions["GetVideoInfos"]

        def as_text(params: Mapping[str, str]) -> dict[str, Any]:
            body = plain(params)
            for item in body["VideoList"]:
                if "Duration" in item:  # absent until VOD has analysed the media
                    item["Duration"] = f"{item['Duration']}"
            return body

        return {**actions, "GetVideoInfos": as_text}


@pytest.fixture
async def fake() -> AsyncIterator[FakeVod]:
    vod = StringDurations(
        access_key_id=AK, access_key_secret=SECRET, seed=8, faults=Faults(delay=0.05)
    )
    await vod.start()
    yield vod
    await vod.stop()


def client_settings(fake: FakeVod, rate: float) -> Settings:
    return Settings(
        access_key_id=AK,
        access_key_secret=SecretStr(SECRET),
        vod_endpoint=fake.url,
        vod_rate_limit=rate,
    )


@pytest.fixture
async def vod(fake: FakeVod) -> AsyncIterator[VodClient]:
    async with VodClient(client_settings(fake, 1000.0), backoff=0.01) as client:
        yield client


async def test_durations_and_missing_media_by_id(fake: FakeVod, vod: VodClient) -> None:
    fake.media.add("short", 125.431)
    fake.media.add("new", None, status="Uploading")
    fake.media.remove("gone")
    infos = await get_video_infos(vod, ["short", "gone", "new", "short", "drawn"])
    assert set(infos.found) == {"short", "new", "drawn"}
    assert infos.missing == ["gone"]
    assert infos.found["short"].duration_s == 125.431  # sent as "125.431", read as a number
    assert (infos.found["new"].duration_s, infos.found["new"].status) == (None, "Uploading")
    drawn = infos.found["drawn"].duration_s
    assert drawn is not None
    assert (await get_video_info(vod, "drawn")).duration_s == drawn  # one id, GetVideoInfo
    assert infos.request_id

    with pytest.raises(VodError) as caught:
        await get_video_info(vod, "gone")
    assert (caught.value.vod_code, caught.value.http_status) == ("InvalidVideo.NotFound", 404)
    with pytest.raises(ValueError, match="at most 20"):
        await get_video_infos(vod, [f"m{i}" for i in range(INFOS_LIMIT + 1)])
    assert (await get_video_infos(vod, [])).found == {}


async def test_media_info_has_a_rate_limiter_of_its_own(fake: FakeVod) -> None:
    """VOD allows 100 calls a second of each (mediainfo 1, 2): they neither wait behind nor
    take from the client's limiter, which is SubmitAIJob's 30."""
    fake.faults.qps = OWN_QPS["GetVideoInfos"]
    async with VodClient(client_settings(fake, 2.0), backoff=0.01) as slow:
        began = time.monotonic()
        await asyncio.gather(*(get_video_infos(slow, [f"m{n}"]) for n in range(101)))
        elapsed = time.monotonic() - began
        assert elapsed >= 0.95  # 101 evenly spaced calls at 100 a second span a second
        assert fake.refused == {}  # and VOD throttled none of them
        own = shared_limiter(slow.endpoint, slow.credentials.source, 100.0, "GetVideoInfos")
        assert own._next > 0  # they took slots of their own limiter...
        assert slow.limiter._next == 0.0  # ...and none of the client's (2 a second: 50 s)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (125.431, 125.431),
        (120, 120.0),
        ("125.431", 125.431),
        (" 60 ", 60.0),
        ("0", 0.0),
        (None, None),
        ("", None),
        ("abc", None),
        ("NaN", None),
        ("Infinity", None),
        (-1, None),
        (True, None),
        ([1], None),
    ],
)
def test_duration_is_a_number_or_a_numeric_string(value: object, seconds: float | None) -> None:
    assert duration_seconds(value) == seconds


def test_bodies_are_read_leniently() -> None:
    video = {"VideoId": "v1", "Duration": "12.5", "Status": "Normal"}
    assert video_info({"Video": video}) is not None
    assert video_info({"RequestId": "r"}) is None
    assert video_info({"Video": [video]}) is None
    # Today's shape, an old doc's wrapped list, and missing ids written as JSON text.
    for listed in ([video], {"Video": [video]}):
        infos = video_infos({"VideoList": listed, "NonExistVideoIds": ["v2"]})
        assert (list(infos.found), infos.missing) == (["v1"], ["v2"])
    infos = video_infos({"VideoList": None, "NonExistVideoIds": '["v2","v3"]'})
    assert (infos.found, infos.missing) == ({}, ["v2", "v3"])
    infos = video_infos({"VideoList": [{"Duration": 1}, "junk"], "NonExistVideoIds": None})
    assert (infos.found, infos.missing) == ({}, [])
