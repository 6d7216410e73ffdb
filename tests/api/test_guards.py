"""Hostile requests to the API: cross-site forms, forged cursors, deep and huge bodies, slow
bodies. Each gets a clear 4xx and changes nothing."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select
from starlette.applications import Starlette

from tracker.api.bodies import BODY_LIMIT, MAX_DEPTH, BodyDeadline
from tracker.api.queries import JobFilter
from tracker.app import create_app
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.db import Database
from tracker.fakevod import FakeVod, Faults
from tracker.models import Job, Submission

KEY, SECRET = "test-key-id", "test-key-secret"
TOKEN = "t0ken"
SUBMIT = {"media_id": "m1", "types": ["AIVideoTag"]}


@pytest.fixture
async def fake() -> AsyncIterator[FakeVod]:
    async with FakeVod(
        access_key_id=KEY, access_key_secret=SECRET, faults=Faults(delay=0.2)
    ) as simulator:
        yield simulator


def vod_settings(database_url: str, fake: FakeVod, **more: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "scheduler": "off",
        "vod_endpoint": fake.url,
        "access_key_id": KEY,
        "access_key_secret": SECRET,
        "vod_rate_limit": 5000.0,
    }
    return Settings(**(values | more))


@pytest.fixture
async def guarded(database_url: str, fake: FakeVod, clock: FrozenClock) -> AsyncIterator[Starlette]:
    app = create_app(vod_settings(database_url, fake, api_tokens=TOKEN), clock=clock)
    async with LifespanManager(app):
        yield app


@pytest.fixture
async def api(guarded: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=guarded)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
        yield http


async def nothing_submitted(database: Database, fake: FakeVod) -> bool:
    async with database.session() as session:
        jobs = await session.scalar(select(func.count()).select_from(Job))
        submissions = await session.scalar(select(func.count()).select_from(Submission))
    return jobs == 0 and submissions == 0 and fake.submit_calls == 0


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"any:{token}".encode()).decode()}


# --- defect 3: cross-site request forgery of POST /jobs ----------------------------------------


async def test_a_cross_site_text_plain_form_submits_nothing(
    api: httpx.AsyncClient, database: Database, fake: FakeVod
) -> None:
    """What a browser sends for `<form method=post enctype=text/plain action=.../jobs>` with an
    input named `{"media_id":"m1","types":["AIVideoTag"],"x":"` and value `"}`, replaying the
    Basic login it cached for the dashboard."""
    form_body = '{"media_id":"m1","types":["AIVideoTag"],"x":"="}'
    browser = {
        "Content-Type": "text/plain",
        "Origin": "http://evil.example",
        "Referer": "http://evil.example/page.html",
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "navigate",
        **basic(TOKEN),
    }
    response = await api.post("/jobs", content=form_body, headers=browser)
    assert response.status_code == 403
    assert response.json()["error"] == "cross_origin"

    # Each lock holds on its own: an older browser without Fetch Metadata ...
    del browser["Sec-Fetch-Site"], browser["Sec-Fetch-Mode"]
    assert (await api.post("/jobs", content=form_body, headers=browser)).status_code == 403
    # ... a form from a page that sends no Origin (same-origin check passes) ...
    del browser["Origin"]
    refused = await api.post("/jobs", content=form_body, headers=browser)
    assert refused.status_code == 401  # Basic opens nothing (browsers sign in to the console)
    # ... and with a token, still only JSON.
    bearer = {"Content-Type": "text/plain", "Authorization": f"Bearer {TOKEN}"}
    unsupported = await api.post("/jobs", content=form_body, headers=bearer)
    assert unsupported.status_code == 415
    assert unsupported.json()["error"] == "unsupported_media_type"
    assert await nothing_submitted(database, fake)


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "http://127.0.0.1:9999", "https://127.0.0.1:8000x"]
)
async def test_json_posted_from_another_origin_is_refused(
    api: httpx.AsyncClient, database: Database, fake: FakeVod, origin: str
) -> None:
    headers = {"Origin": origin, "Authorization": f"Bearer {TOKEN}"}
    response = await api.post("/jobs", json=SUBMIT, headers=headers)
    assert response.status_code == 403, response.text
    assert await nothing_submitted(database, fake)


async def test_the_same_origin_and_programs_without_origin_may_submit(
    api: httpx.AsyncClient, fake: FakeVod
) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    same = await api.post(
        "/jobs", json=SUBMIT, headers={**bearer, "Origin": "http://127.0.0.1:8000"}
    )
    assert same.status_code == 201, same.text
    program = await api.post("/jobs", json={**SUBMIT, "media_id": "m2"}, headers=bearer)
    assert program.status_code == 201, program.text
    assert fake.submit_calls == 2


async def test_basic_credentials_open_nothing(api: httpx.AsyncClient) -> None:
    """A browser replays a cached Basic login on its own, so it is no credential at all: the
    console has its own sign-in (tests/console/test_sessions.py)."""
    assert (await api.get("/jobs", headers=basic(TOKEN))).status_code == 401
    assert (await api.get("/changes", headers=basic(TOKEN))).status_code == 401
    console = await api.get("/ui/jobs", headers=basic(TOKEN))
    assert console.status_code == 303
    assert console.headers["location"].startswith("/ui/login")


async def test_a_real_browser_form_from_another_origin_submits_nothing(
    database_url: str, fake: FakeVod, live_server: Any, tmp_path: Any
) -> None:
    """Headless Chromium loads a page from one loopback origin that auto-posts a text/plain
    form to the tracker on another (the API open on loopback: no token at all)."""
    from tests import programs

    chromium = programs.chromium()
    app = create_app(vod_settings(database_url, fake))
    with live_server(app) as tracker_url:
        page = (
            f'<form id=f method=post enctype="text/plain" action="{tracker_url}/jobs">'
            '<input type=hidden name=\'{"media_id":"m1","types":["AIVideoTag"],"x":"\' '
            "value='\"}'></form><script>document.getElementById('f').submit()</script>"
        )
        site = await _serve_page(page)
        try:
            process = await asyncio.create_subprocess_exec(
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=5000",
                "--dump-dom",
                site.url,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            dom, _ = await asyncio.wait_for(process.communicate(), 60)
        finally:
            await site.close()
    assert "cross_origin" in dom.decode(), dom.decode()[:500]  # the tracker's 403, shown
    assert fake.submit_calls == 0


class _Page:
    def __init__(self, server: asyncio.Server, url: str) -> None:
        self.server = server
        self.url = url

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def _serve_page(html: str) -> _Page:
    """One HTML page on its own loopback origin (another port than the tracker's)."""
    body = html.encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return _Page(server, f"http://127.0.0.1:{port}/")


# --- defect 11: bodies of POST /jobs ----------------------------------------------------------


def _nested(depth: int) -> bytes:
    return b'{"media_id":"m1","types":["AIVideoTag"],"config":' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000, 30000])
async def test_deeply_nested_bodies_are_400(
    api: httpx.AsyncClient, database: Database, fake: FakeVod, depth: int
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    response = await api.post("/jobs", content=_nested(depth)[:BODY_LIMIT], headers=headers)
    assert response.status_code == 400, response.text
    assert await nothing_submitted(database, fake)


async def test_bodies_over_the_limit_are_413_declared_or_streamed(
    api: httpx.AsyncClient, database: Database, fake: FakeVod
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    big = json.dumps({**SUBMIT, "pad": "x" * BODY_LIMIT}).encode()
    declared = await api.post("/jobs", content=big, headers=headers)
    assert declared.status_code == 413
    assert declared.json()["error"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(64):
            yield b" " * 65536

    streamed = await api.post("/jobs", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert await nothing_submitted(database, fake)


async def test_nan_and_infinity_in_a_body_are_400(
    api: httpx.AsyncClient, database: Database, fake: FakeVod
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    for config in ('{"x": NaN}', '{"x": -Infinity}', '{"x": 1e999}'):
        body = f'{{"media_id": "m1", "types": ["AIVideoTag"], "config": {config}}}'
        response = await api.post("/jobs", content=body, headers=headers)
        assert response.status_code == 400, (config, response.text)
    assert await nothing_submitted(database, fake)


async def test_a_half_sent_body_is_answered_408_and_closed(
    database_url: str, live_server: Any
) -> None:
    app = create_app(Settings(database_url=database_url, scheduler="off"))
    app.add_middleware(BodyDeadline, seconds=0.5)  # outermost: the same guard, a short clock
    with live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"media_id": '
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # read() to EOF: the server closed
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer


# --- defect 10: forged cursors ----------------------------------------------------------------


def _cursor(payload: str) -> str:
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


UNFILTERED = JobFilter().fingerprint()  # a forger can compute it: the code is public


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor(f'[1, "2026-01-01T00:00:00+00:00", true, "{UNFILTERED}"]'),
        _cursor(f'[true, "2026-01-01T00:00:00+00:00", 1, "{UNFILTERED}"]'),
        _cursor("[" * 20_000 + "]" * 20_000),
        _cursor("[" * 150 + "]" * 150),
        "A" * 60_000,
    ],
    ids=["id-true", "version-true", "deep", "deep-short", "long"],
)
async def test_forged_cursors_are_400(api: httpx.AsyncClient, cursor: str) -> None:
    response = await api.get(
        "/jobs", params={"cursor": cursor}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == "cursor"
