"""Simulator, media: the videos VOD holds, their durations, and GetVideoInfo(s)' bodies.

Held to ../shared/vod-mediainfo-reference.md (its sections below): every media id is a video of
a duration stable per id (drawn from the seed) or `Faults.duration` for all, unless
`Faults.missing_media_rate` makes VOD not know it; tests may also add media of their own, with
any `Status` and duration (none: not analysed yet, section 1).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tracker.fakevod.faults import Faults
from tracker.fakevod.gateway import Refused, required
from tracker.vod import INFOS_LIMIT, format_timestamp

SHORTEST, LONGEST = 30.0, 1800.0  # seconds of a drawn duration
BYTES_PER_SECOND = 250_000  # a plausible `Size` for the duration
LIBRARY_START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class FakeMedia:
    """One video: what GetVideoInfo and GetVideoInfos answer about it."""

    media_id: str
    duration: float | None  # seconds; None: not analysed yet (no `Duration` key is sent)
    status: str = "Normal"  # Uploading, UploadSucc, Transcoding, Normal... (section 1)
    created: datetime = LIBRARY_START
    title: str = ""

    def _common(self, region: str) -> dict[str, Any]:
        stamp = format_timestamp(self.created)
        video: dict[str, Any] = {
            "VideoId": self.media_id,
            "Title": self.title or f"video {self.media_id}",
            "Description": "",
            "Status": self.status,
            "CreationTime": stamp,
            "ModificationTime": stamp,
            "Size": int((self.duration or 0) * BYTES_PER_SECOND),
            "AppId": "app-1000000",
            "CateId": 1000,
            "CateName": "default",
            "Tags": "tracker,simulator",
            "CoverURL": f"https://outin-example.oss-{region}.aliyuncs.com/{self.media_id}.jpg",
            "StorageLocation": f"outin-example.oss-{region}.aliyuncs.com",
            "StorageClass": "Standard",
            "TemplateGroupId": "VOD_NO_TRANSCODE",
            "DownloadSwitch": "on",
            "ReferenceId": "",
            "UserData": "",
        }
        if self.duration is not None:
            video["Duration"] = self.duration  # a JSON number, float seconds (section 6.6)
        return video

    def video(self, region: str) -> dict[str, Any]:
        """GetVideoInfo's `Video`: `Snapshots` an object wrapping the list (sections 1, 6.4)."""
        return {
            **self._common(region),
            "RegionId": region,
            "AuditStatus": "Normal",
            "Snapshots": {"Snapshot": [self._snapshot(region)]},
        }

    def list_item(self, region: str) -> dict[str, Any]:
        """An item of GetVideoInfos' `VideoList`: `Snapshots` a plain array, and neither
        `RegionId` nor `AuditStatus`, which the SDK's model lacks (section 2)."""
        return {**self._common(region), "Snapshots": [self._snapshot(region)]}

    def _snapshot(self, region: str) -> str:
        return f"https://outin-example.oss-{region}.aliyuncs.com/{self.media_id}/snapshot-1.jpg"


def no_such_video() -> Refused:
    """A media VOD does not know (section 3)."""
    return Refused(404, "InvalidVideo.NotFound", "The video does not exist.")


class MediaLibrary:
    """Every media id names a video unless the missing rate draws it out; tests may `add` their
    own. Drawn media are not stored: they are the same on every lookup, so changing
    `faults.duration` or `faults.missing_media_rate` while running takes effect at once."""

    def __init__(self, faults: Faults, seed: int | None) -> None:
        self.faults = faults
        self.region = "cn-shanghai"  # the RegionId its videos report
        # Without a seed, durations are still stable per id for the life of the simulator.
        self._salt = str(seed) if seed is not None else secrets.token_hex(8)
        self.added: dict[str, FakeMedia] = {}
        self.removed: set[str] = set()  # ids VOD does not know whatever the rates

    def add(
        self, media_id: str, duration: float | None = None, *, status: str = "Normal"
    ) -> FakeMedia:
        """A media of a chosen duration and status (None: not analysed yet)."""
        self.removed.discard(media_id)
        media = FakeMedia(media_id, duration, status=status, created=self._created(media_id))
        self.added[media_id] = media
        return media

    def remove(self, media_id: str) -> None:
        """VOD no longer knows this media (deleted, or never uploaded)."""
        self.added.pop(media_id, None)
        self.removed.add(media_id)

    def get(self, media_id: str) -> FakeMedia | None:
        if media_id in self.removed:
            return None
        if media_id in self.added:
            return self.added[media_id]
        rate = self.faults.missing_media_rate
        if rate > 0 and self._rng("missing", media_id).random() < rate:
            return None
        duration = self.faults.duration
        if duration is None:
            duration = round(self._rng("duration", media_id).uniform(SHORTEST, LONGEST), 3)
        return FakeMedia(media_id, duration, created=self._created(media_id))

    # -- the actions --

    def video_info(self, params: Mapping[str, str]) -> dict[str, Any]:
        """GetVideoInfo: one media's `Video` (section 1). A ReferenceId names no media the
        simulator holds: 404 like an unknown VideoId."""
        media_id = params.get("VideoId") or ""
        if not media_id and not params.get("ReferenceId"):
            required(params, "VideoId")
        media = self.get(media_id) if media_id else None
        if media is None:
            raise no_such_video()
        return {"Video": media.video(self.region)}

    def video_infos(self, params: Mapping[str, str]) -> dict[str, Any]:
        """GetVideoInfos: `VideoList` a plain array, unknown ids in `NonExistVideoIds`, a 200
        even when none is known (sections 2, 7); more than INFOS_LIMIT ids is InvalidParameter
        (the real code is [U])."""
        named = (part.strip() for part in required(params, "VideoIds").split(","))
        ids = [i for i in dict.fromkeys(named) if i]
        if not ids or len(ids) > INFOS_LIMIT:
            raise Refused(
                400,
                "InvalidParameter",
                f"The specified parameter VideoIds holds {len(ids)} ids; 1 to {INFOS_LIMIT}.",
            )
        known = {i: self.get(i) for i in ids}
        return {
            "VideoList": [m.list_item(self.region) for m in known.values() if m is not None],
            "NonExistVideoIds": [i for i, m in known.items() if m is None],
        }

    def _created(self, media_id: str) -> datetime:
        minutes = self._rng("created", media_id).randrange(60 * 24 * 365)
        return LIBRARY_START - timedelta(minutes=minutes)

    def _rng(self, purpose: str, media_id: str) -> random.Random:
        # A generator per (purpose, id): the answer for one id never depends on which other
        # ids were asked about before, or how often.
        return random.Random(f"{purpose}:{self._salt}:{media_id}")
