"""VOD's media info: GetVideoInfo and GetVideoInfos, for a media's duration before it is submitted.

A vendor adapter (core, no database): the calls go through `VodClient.call`, which gives these
actions a rate limiter of their own (`OWN_QPS` in client.py). Shapes, errors and limits are those
of ../shared/vod-mediainfo-reference.md (the section numbers below are its own).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tracker.vod.errors import VodError
from tracker.vod.results import opt_str

if TYPE_CHECKING:
    from tracker.vod.client import VodClient

INFOS_LIMIT = 20  # VideoIds per GetVideoInfos call (section 2)
INFO_QPS = 100.0  # GetVideoInfo and GetVideoInfos, per account (sections 1, 2)
NOT_FOUND = "InvalidVideo.NotFound"  # a media VOD does not know (section 3)


@dataclass(frozen=True)
class MediaInfo:
    """What the tracker reads of a media: its duration in seconds (None while VOD has not
    analysed it yet, section 1) and its `Status`."""

    media_id: str
    duration_s: float | None
    status: str | None

    @classmethod
    def from_vod(cls, video: Mapping[str, Any]) -> MediaInfo:
        return cls(
            media_id=str(video.get("VideoId", "")),
            duration_s=duration_seconds(video.get("Duration")),
            status=opt_str(video.get("Status")),
        )


@dataclass(frozen=True)
class MediaInfos:
    """One GetVideoInfos answer: the media VOD knows, keyed by id (the order of `VideoList` is
    not documented, section 2), and the ids it does not know (`NonExistVideoIds`)."""

    request_id: str
    found: dict[str, MediaInfo]
    missing: list[str]


def duration_seconds(value: object) -> float | None:
    """`Duration` in seconds: neither SDK converts it, and it arrives as a number or as a string
    (section 5; GetMezzanineInfo types it a string). Anything that is not a finite number of
    seconds, zero or more, is unknown: None, never a guess."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def video_info(body: Mapping[str, Any]) -> MediaInfo | None:
    """GetVideoInfo's `Video`, a single object (section 1); None when the answer has none."""
    video = body.get("Video")
    if not isinstance(video, Mapping) or not video.get("VideoId"):
        return None
    return MediaInfo.from_vod(video)


def video_infos(body: Mapping[str, Any]) -> MediaInfos:
    """GetVideoInfos: `VideoList` a plain array, `NonExistVideoIds` a plain string array
    (section 2). An old doc sample wrapped the list (`{"Video": [...]}`) or wrote the missing ids
    as JSON text: both are read too."""
    listed = body.get("VideoList")
    if isinstance(listed, Mapping):
        listed = listed.get("Video", [])
    items = listed if isinstance(listed, list) else []
    found: dict[str, MediaInfo] = {}
    for item in items:
        if isinstance(item, Mapping) and item.get("VideoId"):
            info = MediaInfo.from_vod(item)
            found[info.media_id] = info
    return MediaInfos(str(body.get("RequestId", "")), found, _id_list(body.get("NonExistVideoIds")))


def _id_list(value: object) -> list[str]:
    if isinstance(value, Mapping):  # the `{"String": [...]}` wrapper of ListAIJob's answer
        value = value.get("String", [])
    if isinstance(value, str):
        text = value.strip().strip("[]")
        return [part.strip().strip('"') for part in text.split(",") if part.strip().strip('"')]
    if isinstance(value, list):
        return [str(item) for item in value if item]
    return []


async def get_video_info(vod: VodClient, media_id: str) -> MediaInfo:
    """GetVideoInfo of one media. A media VOD does not know raises VodError with the code
    `InvalidVideo.NotFound` (HTTP 404, section 3); so does an answer without a `Video`."""
    if not media_id:
        raise ValueError("get_video_info needs a media id")
    body = await vod.call("GetVideoInfo", {"VideoId": media_id})
    info = video_info(body)
    if info is None:
        raise VodError(
            "GetVideoInfo answered without a Video",
            vod_code=NOT_FOUND,
            http_status=404,
            request_id=opt_str(body.get("RequestId")),
        )
    return info


async def get_video_infos(vod: VodClient, media_ids: Sequence[str]) -> MediaInfos:
    """GetVideoInfos of at most INFOS_LIMIT media (callers chunk). An id in neither
    `VideoList` nor `NonExistVideoIds` is taken for missing: VOD gave no duration for it."""
    ids = list(dict.fromkeys(media_ids))
    if len(ids) > INFOS_LIMIT:
        raise ValueError(f"GetVideoInfos takes at most {INFOS_LIMIT} ids, got {len(ids)}")
    if not ids:
        return MediaInfos("", {}, [])
    infos = video_infos(await vod.call("GetVideoInfos", {"VideoIds": ",".join(ids)}))
    found = {media_id: infos.found[media_id] for media_id in ids if media_id in infos.found}
    missing = [media_id for media_id in ids if media_id not in found]
    return MediaInfos(infos.request_id, found, missing)
