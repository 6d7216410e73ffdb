"""GET /: the dashboard, read by a real headless Chromium the way a person sees it."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from tests import programs
from tests.factories import add_rows, new_event, new_job
from tracker.app import create_app
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.db import Database
from tracker.models import Job, JobState

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
EVIL = "<img src=x onerror=\"document.title='pwned'\">"


def job(n: int, state: JobState, job_type: str, **fields: Any) -> Job:
    values = {
        "media_id": f"media-{n}",
        "submitted_at": NOW - timedelta(minutes=90 - n),
        "updated_at": NOW,
        **fields,
    }
    return new_job(values.pop("job_id", f"job-{n}"), state, type=job_type, **values)


class Visible(HTMLParser):
    """Text by element id, and all visible text, from the DOM Chromium produced."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.text: list[str] = []
        self.title = ""
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("meta", "input", "br", "img", "link"):
            if tag == "img":
                self.text.append("<IMG ELEMENT>")
            return
        self._open.append((tag, dict(attrs).get("id")))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        tags = [t for t, _ in self._open]
        if "style" in tags or "script" in tags:
            return
        if "title" in tags:
            self.title += data
            return
        self.text.append(data)
        for _, element_id in self._open:
            if element_id:
                self.by_id[element_id] = self.by_id.get(element_id, "") + data


def chromium_dom(url: str, profile: Path) -> Visible:
    browser = programs.chromium()
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=3000",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=True)
    parser = Visible()
    parser.feed(done.stdout)
    return parser


@pytest.fixture
def served(fresh_database_url: str, live_server: Any) -> Iterator[str]:
    rows = [
        job(1, JobState.PROCESSING, "AIVideoTag", stale=True, stale_at=NOW),
        job(2, JobState.PROCESSING, "AIVideoTag"),
        job(3, JobState.PROCESSING, "AIMediaDNA"),
        job(4, JobState.SUCCEEDED, "AIVideoTag"),
        job(5, JobState.FAILED, "AIMediaDNA", media_id=EVIL),
        job(6, JobState.SUBMIT_UNKNOWN, "AIMediaDNA", job_id=None),
        new_event(
            "job-4",
            "success",
            NOW - timedelta(minutes=1),
            media_id="media-4",
            applied=False,
            reason=EVIL,
        ),
    ]
    asyncio.run(add_rows(fresh_database_url, *rows))
    app = create_app(
        Settings(database_url=fresh_database_url, scheduler="off"), clock=FrozenClock(NOW)
    )
    with live_server(app) as url:
        yield url


def test_chromium_shows_counts_stale_jobs_callbacks_and_search(served: str, tmp_path: Path) -> None:
    page = chromium_dom(f"{served}/", tmp_path / "profile")
    assert page.title == "vod-ai-tracker"  # the injected onerror never ran
    assert page.by_id["count-processing"] == "3"
    assert page.by_id["count-AIVideoTag-processing"] == "2"
    assert page.by_id["count-AIMediaDNA-failed"] == "1"
    assert page.by_id["count-submit_unknown"] == "1"
    assert page.by_id["count-total"] == "6"
    assert page.by_id["stale-count"] == "1"
    assert page.by_id["oldest-unfinished"] == "1h 29m 00s"
    assert "job-1" in page.by_id["stale-jobs"]
    assert "job-2" not in page.by_id["stale-jobs"]
    recent = page.by_id["recent-callbacks"]
    assert "job-4" in recent
    assert f"not applied: {EVIL}" in recent  # shown as text, not markup
    assert "<IMG ELEMENT>" not in page.text

    found = chromium_dom(f"{served}/?q=media-3", tmp_path / "profile2")
    assert "job-3" in found.by_id["search-results"]
    assert "job-2" not in found.by_id["search-results"]
    missing = chromium_dom(f"{served}/?q=nothing-here", tmp_path / "profile3")
    assert missing.by_id["search-results"] == "no job or media"


async def test_dashboard_escapes_and_refreshes(
    client: httpx.AsyncClient, database: Database
) -> None:
    await add_rows(database, job(1, JobState.PROCESSING, "AIVideoTag", media_id=EVIL))
    response = await client.get("/", params={"q": EVIL})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<img" not in response.text
    assert "&lt;img src=x onerror=&quot;document.title=&#x27;pwned&#x27;&quot;&gt;" in response.text
    assert '<meta http-equiv="refresh"' in response.text


async def test_dashboard_asks_a_browser_for_the_token(database_url: str) -> None:
    settings = Settings(database_url=database_url, scheduler="off", api_tokens="tok")  # type: ignore[arg-type]
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            denied = await http.get("/")
            assert denied.status_code == 401
            assert denied.headers["www-authenticate"].startswith("Basic")
            assert denied.json()["error"] == "unauthorized"
            assert (await http.get("/", auth=("anyone", "tok"))).status_code == 200
            assert (await http.get("/", auth=("anyone", "bad"))).status_code == 401
            bearer = await http.get("/", headers={"Authorization": "Bearer tok"})
            assert bearer.status_code == 200


async def test_dashboard_tells_the_browser_to_run_nothing_and_not_be_framed(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "script-src" not in policy  # default-src 'none' covers scripts: none run
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
