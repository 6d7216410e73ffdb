"""The console with tokens set (so it asks for a sign-in), and a signed-in client."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from tests import programs
from tracker.app import create_app
from tracker.clock import FrozenClock
from tracker.config import Settings

TOKEN = "console-token-0123456789abcdef"


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


async def sign_in(http: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    form = await http.get("/ui/login")
    return await http.post(
        "/ui/login", data={"csrf_token": csrf_of(form.text), "token": token, "next": "/ui/"}
    )


@pytest.fixture
def console_settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        scheduler="off",
        notify="off",
        api_tokens=TOKEN,  # type: ignore[arg-type]
    )


@pytest.fixture
async def console_app(console_settings: Settings, clock: FrozenClock) -> AsyncIterator[Starlette]:
    app = create_app(console_settings, clock=clock)
    async with LifespanManager(app):
        yield app


@pytest.fixture
async def browser_client(console_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """Not signed in; keeps cookies like a browser."""
    transport = httpx.ASGITransport(app=console_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        yield http


@pytest.fixture
async def signed_in(browser_client: httpx.AsyncClient) -> httpx.AsyncClient:
    response = await sign_in(browser_client)
    assert response.status_code == 303
    return browser_client


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright's launch arguments, on the system Chromium (Debian's `chromium`):
    Playwright's own browser download cannot be reached here. Missing, the browser tests skip
    (and fail under TRACKER_TEST_PROGRAMS=required, as CI sets it)."""
    return {
        **browser_type_launch_args,
        "executable_path": programs.chromium(),
        "args": ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    }


@pytest.fixture(scope="session")
def base_url() -> None:
    """pytest-base-url's fixture (a dependency of pytest-playwright) is a session fixture
    defined as a method, which pytest now warns about (an error here): the tests pass full
    URLs instead."""
    return None
