"""Flows: each media's duration from VOD before it is submitted (GetVideoInfo, GetVideoInfos).

No database here, only VOD: the submitter asks before it claims anything, so that a media VOD
does not know is refused before SubmitAIJob (404 `media_not_found`) and the budget knows what a
submission costs (tracker/submit/budget.py). One media is asked with GetVideoInfo, many with
GetVideoInfos, at most INFOS_LIMIT a call, within their own rate limit (tracker/vod/client.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from tracker.errors import NotFound, TrackerError
from tracker.submit.budget import Budget
from tracker.submit.claims import SubmitRequest
from tracker.vod import (
    INFOS_LIMIT,
    MediaInfo,
    MediaInfos,
    VodClient,
    VodError,
    VodUnreachable,
    get_video_info,
    get_video_infos,
)
from tracker.vod.mediainfo import NOT_FOUND

log = logging.getLogger(__name__)


class MediaNotFound(NotFound):
    code = "media_not_found"


class DurationUnknown(TrackerError):
    """VOD knows the media but gave no duration (not analysed yet), and a budget applies to a
    type asked for: what it would cost cannot be counted, so it is not submitted yet."""

    status_code = 409
    code = "duration_unknown"


def not_found(media_id: str, region: str) -> MediaNotFound:
    return MediaNotFound(
        f"VOD ({region}) does not know media {media_id!r}; nothing submitted",
        parameter="media_id",
    )


async def media_info(vod: VodClient, media_id: str) -> MediaInfo:
    """One media's info (GetVideoInfo). A media VOD does not know raises MediaNotFound; any
    other refusal VOD's own error (nothing was submitted)."""
    try:
        return await get_video_info(vod, media_id)
    except VodError as exc:
        if exc.vod_code == NOT_FOUND:
            raise not_found(media_id, vod.region) from None
        raise


async def media_infos(vod: VodClient, media_ids: Sequence[str]) -> MediaInfos:
    """The infos of at most INFOS_LIMIT media: GetVideoInfo for one, GetVideoInfos for more."""
    if len(media_ids) > INFOS_LIMIT:
        raise ValueError(f"at most {INFOS_LIMIT} media a call, got {len(media_ids)}")
    if len(media_ids) != 1:
        return await get_video_infos(vod, media_ids)
    (media_id,) = media_ids
    try:
        info = await media_info(vod, media_id)
    except MediaNotFound:
        return MediaInfos("", {}, [media_id])
    return MediaInfos("", {media_id: info}, [])


def with_duration(request: SubmitRequest, info: MediaInfo, budget: Budget) -> SubmitRequest:
    """The request with VOD's duration; DurationUnknown if VOD has none while a budget applies
    to one of its types (it could not be counted)."""
    limited = [t for t in request.types if budget.limit_ms(t) is not None]
    if info.duration_s is None and limited:
        raise DurationUnknown(
            f"VOD has no duration for media {request.media_id!r} yet (Status "
            f"{info.status or 'unknown'}); {', '.join(limited)} has a daily budget, so it is "
            "not submitted until VOD has analysed the media",
            parameter="media_id",
        )
    return replace(request, duration_s=info.duration_s)


def unmeasured(
    request: SubmitRequest, budget: Budget, error: VodError | VodUnreachable
) -> SubmitRequest:
    """The request without a duration when GetVideoInfo failed (refused, for example by a RAM
    policy without `vod:GetVideoInfo`, or unanswered) and no budget applies to its types: the
    duration only counts minutes, so the submission goes on. With a budget it re-raises: what
    cannot be counted is not submitted."""
    if any(budget.limit_ms(t) is not None for t in request.types):
        raise error
    log.warning("no duration for media %s (GetVideoInfo: %s)", request.media_id, error.message)
    return request
