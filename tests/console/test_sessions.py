"""Signing in to the console: a session on the server, a cookie without the token, CSRF on every
form, nothing of a job before sign-in, and a session that ends when it should."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from tests.console.conftest import TOKEN, csrf_of, sign_in
from tests.factories import add_job
from tracker.app import create_app
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.db import Database
from tracker.models import ConsoleSession, JobState, Subscription

PAGES = [
    "/ui/",
    "/ui/jobs",
    "/ui/jobs/secret-job",
    "/ui/media/secret-media",
    "/ui/subscriptions",
    "/ui/inbox",
    "/ui/scheduler",
    "/ui/rows/1",
]


async def test_nothing_is_shown_before_sign_in(
    browser_client: httpx.AsyncClient, database: Database
) -> None:
    await add_job(database, "secret-job", JobState.FAILED, media_id="secret-media")
    for path in PAGES:
        response = await browser_client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/ui/login?next=")
        assert "secret" not in response.text
    stream = await browser_client.get("/ui/changes")
    assert stream.status_code == 401
    login = await browser_client.get(response.headers["location"])
    assert login.status_code == 200
    assert "secret-job" not in login.text
    assert 'name="token"' in login.text


async def test_a_good_token_opens_a_session_whose_cookie_holds_no_token(
    browser_client: httpx.AsyncClient, database: Database
) -> None:
    response = await sign_in(browser_client)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/"
    cookie = response.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "path=/ui" in cookie.lower()
    assert "max-age=43200" in cookie.lower()  # TRACKER_UI_SESSION_TTL, 12 h by default
    assert "secure" not in attributes  # on loopback: plain HTTP works
    value = cookie.split(";")[0].split("=", 1)[1]
    payload = json.loads(base64.b64decode(value.split(".")[0]))
    assert set(payload) == {"sid", "csrf"}
    assert TOKEN not in base64.b64decode(value.split(".")[0]).decode()
    async with database.session() as session:
        assert await session.scalar(select(func.count()).select_from(ConsoleSession)) == 1
    assert (await browser_client.get("/ui/jobs")).status_code == 200


async def test_a_bad_token_is_refused_and_opens_nothing(browser_client: httpx.AsyncClient) -> None:
    response = await sign_in(browser_client, token="not-a-token")
    assert response.status_code == 401
    assert "not one of this tracker" in response.text
    assert (await browser_client.get("/ui/")).status_code == 303


async def test_sign_in_needs_the_form_s_csrf_token(browser_client: httpx.AsyncClient) -> None:
    await browser_client.get("/ui/login")
    forged = await browser_client.post("/ui/login", data={"token": TOKEN})
    assert forged.status_code == 403
    assert (await browser_client.get("/ui/")).status_code == 303


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/jobs", "/ui\\x"])
async def test_after_sign_in_only_console_pages_are_a_destination(
    browser_client: httpx.AsyncClient, target: str
) -> None:
    form = await browser_client.get("/ui/login")
    response = await browser_client.post(
        "/ui/login", data={"csrf_token": csrf_of(form.text), "token": TOKEN, "next": target}
    )
    assert response.headers["location"] == "/ui/"


async def test_sign_out_ends_the_session_on_the_server(
    signed_in: httpx.AsyncClient, database: Database
) -> None:
    stolen = dict(signed_in.cookies)
    page = await signed_in.get("/ui/logout")
    response = await signed_in.post("/ui/logout", data={"csrf_token": csrf_of(page.text)})
    assert response.status_code == 303
    assert "signed_out" in response.headers["location"]
    async with database.session() as session:
        assert await session.scalar(select(func.count()).select_from(ConsoleSession)) == 0
    assert (await signed_in.get("/ui/")).status_code == 303
    # A copy of the cookie taken before signing out opens nothing either.
    signed_in.cookies.clear()
    for name, value in stolen.items():
        signed_in.cookies.set(name, value)
    assert (await signed_in.get("/ui/")).status_code == 303


async def test_a_session_ends_after_its_lifetime(
    signed_in: httpx.AsyncClient, clock: FrozenClock
) -> None:
    clock.advance(timedelta(hours=11, minutes=59))
    assert (await signed_in.get("/ui/")).status_code == 200
    clock.advance(timedelta(minutes=2))
    assert (await signed_in.get("/ui/")).status_code == 303


async def test_withdrawing_the_token_ends_its_sessions(database_url: str) -> None:
    both = Settings(
        database_url=database_url,
        scheduler="off",
        notify="off",
        api_tokens=f"{TOKEN},other-token-xyz",  # type: ignore[arg-type]
        ui_secret="a-fixed-cookie-key",  # type: ignore[arg-type]
    )
    app = create_app(both)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            await sign_in(http)
            assert (await http.get("/ui/")).status_code == 200
            cookies = dict(http.cookies)
    fewer = both.model_copy(update={"api_tokens": both.api_tokens[1:]})
    app = create_app(fewer)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", cookies=cookies
        ) as http:
            assert (await http.get("/ui/")).status_code == 303


async def test_the_cookie_is_secure_off_loopback(database_url: str) -> None:
    settings = Settings(
        database_url=database_url,
        scheduler="off",
        notify="off",
        host="0.0.0.0",
        api_tokens=TOKEN,  # type: ignore[arg-type]
    )
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://tracker") as http:
            response = await sign_in(http)
    assert "secure" in response.headers["set-cookie"].lower()


async def test_a_form_without_its_csrf_token_changes_nothing(
    signed_in: httpx.AsyncClient, database: Database, clock: FrozenClock
) -> None:
    async with database.write() as session:
        sub = Subscription(
            url="https://example.com/hook",
            enabled=True,
            secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            source="api",
            cursor_seq=0,
            created_at=clock(),
            updated_at=clock(),
        )
        session.add(sub)
    for data in ({}, {"csrf_token": "guessed"}):
        response = await signed_in.post("/ui/subscriptions/1/disable", data=data)
        assert response.status_code == 403
        assert "CSRF" in response.text
    # From another site's page: the app's Origin guard refuses it before the console sees it.
    page = await signed_in.get("/ui/subscriptions/1")
    cross = await signed_in.post(
        "/ui/subscriptions/1/disable",
        data={"csrf_token": csrf_of(page.text)},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403
    assert cross.json()["error"] == "cross_origin"
    async with database.session() as session:
        assert (await session.get(Subscription, 1)).enabled is True  # type: ignore[union-attr]
    done = await signed_in.post(
        "/ui/subscriptions/1/disable", data={"csrf_token": csrf_of(page.text)}
    )
    assert done.status_code == 303
    async with database.session() as session:
        assert (await session.get(Subscription, 1)).enabled is False  # type: ignore[union-attr]


async def test_on_an_open_api_the_console_needs_no_sign_in(client: httpx.AsyncClient) -> None:
    page = await client.get("/ui/")
    assert page.status_code == 200
    assert "needs no sign-in" in page.text
    assert (await client.get("/ui/login")).status_code == 303


async def test_pages_forbid_inline_script_framing_and_caching(signed_in: httpx.AsyncClient) -> None:
    response = await signed_in.get("/ui/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "style-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["cache-control"] == "no-store"
    assert "<script>" not in response.text
    assert " style=" not in response.text
    assert re.search(r"<[^>]*\son[a-z]+=", response.text) is None  # no onclick=... handlers


async def test_a_link_from_another_site_keeps_the_session(
    signed_in: httpx.AsyncClient,
) -> None:
    """A SameSite=Strict cookie does not come with another site's link: the console answers
    with one same-site hop and sets no cookie (which would replace the browser's session)."""
    from_chat = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    bare = httpx.AsyncClient(transport=signed_in._transport, base_url="http://127.0.0.1")
    async with bare:
        page = await bare.get("/ui/jobs/x", headers=from_chat)
        assert page.status_code == 303
        hop = await bare.get(page.headers["location"], headers=from_chat)
        assert 'http-equiv="refresh"' in hop.text
        assert "hop=1" in hop.text
        assert "set-cookie" not in hop.headers
    # The hop itself is same-site: the browser sends its cookie and lands where it was going.
    landed = await signed_in.get("/ui/login?next=%2Fui%2Fjobs&hop=1")
    assert landed.status_code == 303
    assert landed.headers["location"] == "/ui/jobs"
