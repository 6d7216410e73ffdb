"""How pages write times and chart hours (cut from ISO text for speed: the same as strftime),
and the change log's head a live page follows the stream from (read with the sign-in check)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import httpx

from tests.factories import new_job
from tracker.console.charts import hour_labels
from tracker.console.format import time_html, utc_text
from tracker.db import Database
from tracker.models import JobState
from tracker.notify.changes import latest_seq

MOMENTS = [
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 6, 1, 8, 0, 0, 1, tzinfo=timezone(timedelta(hours=8))),  # written in UTC
    datetime(999, 1, 1, 0, 0, tzinfo=UTC),  # strftime writes such a year unpadded
]


def test_a_time_reads_as_strftime_writes_it() -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    for moment in MOMENTS:
        html = str(time_html(moment, now))
        stamp = moment.astimezone(UTC)
        assert f'title="{stamp.strftime("%Y-%m-%d %H:%M:%S UTC")}"' in html
        assert f'title="{utc_text(moment)}"' in html
        assert f'datetime="{stamp.isoformat().replace("+00:00", "Z")}"' in html
    assert str(time_html(None, now)) == '<span class="muted">–</span>'


def test_chart_hours_read_as_strftime_writes_them() -> None:
    hours = [moment.replace(minute=0, second=0, microsecond=0) for moment in MOMENTS]
    assert hour_labels(hours) == [f"{hour:%Y-%m-%d %H:00}" for hour in hours]


async def test_a_live_page_follows_the_stream_from_the_head_read_with_the_sign_in(
    signed_in: httpx.AsyncClient, database: Database
) -> None:
    async with database.write() as session:
        session.add_all(new_job(f"h{i}", JobState.PROCESSING, media_id=f"m{i}") for i in range(3))
    async with database.session() as session:
        head = await latest_seq(session)
    assert head > 0
    for path in ("/ui/", "/ui/jobs", "/ui/inbox", "/ui/jobs/h1", "/ui/media/m1"):
        page = (await signed_in.get(path)).text
        found = re.search(r'data-after="(\d+)"', page)
        assert found is not None, path
        assert int(found.group(1)) == head, path
