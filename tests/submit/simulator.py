"""The VOD simulator the submitter's tests run against, its settings, and what VOD and the
database hold afterwards."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from tracker.config import Settings
from tracker.db import Database
from tracker.fakevod import FakeVod, Refused
from tracker.models import Job

KEY, SECRET = "test-key-id", "test-key-secret"
BOTH = ("AIVideoTag", "AIMediaDNA")


class RefusingVod(FakeVod):
    """Refuses SubmitAIJob for chosen media with a VOD error body (vod-reference.md 1.4), and
    throttles every `throttle_every`-th call (the `qps` bucket needs a sustained overload)."""

    refuse: set[str]
    throttle_every = 0
    _calls = 0

    def _submit(self, params: Mapping[str, str]) -> dict[str, Any]:
        self._calls += 1
        if self.throttle_every and self._calls % self.throttle_every == 0:
            raise Refused(400, "Throttling.User", "Request was denied due to user flow control.")
        if params.get("MediaId") in self.refuse:
            raise Refused(403, "Forbidden.RAM", "The user is not authorized for this media.")
        return super()._submit(params)


def vod_settings(database_url: str, url: str, **more: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "vod_endpoint": url,
        "access_key_id": KEY,
        "access_key_secret": SECRET,
        "vod_rate_limit": 5000.0,
        "vod_timeout": timedelta(seconds=2),
    }
    return Settings(**(values | more))


async def jobs_of(database: Database, media_id: str | None = None) -> list[Job]:
    query = select(Job).order_by(Job.id)
    if media_id is not None:
        query = query.where(Job.media_id == media_id)
    async with database.session() as session:
        return list(await session.scalars(query))


def truth(fake: FakeVod) -> Counter[tuple[str, str]]:
    """How many jobs VOD really created per (media, type)."""
    return Counter((job.media_id, job.type) for job in fake.jobs.values())
