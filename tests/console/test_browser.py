"""The console in a real browser (Playwright driving the system Chromium), as a person uses it:
sign in, read, filter, page, click each button, watch a job turn final without reloading. Every
test fails on a console error, an uncaught script error or a CSP violation."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.console.conftest import TOKEN
from tests.factories import new_job
from tracker.app import create_app
from tracker.config import Settings
from tracker.db import Database
from tracker.models import CallbackEvent, JobState, Subscription

pytestmark = pytest.mark.browser

EVIL = "<img src=x onerror=\"document.title='pwned'\">"
T = TypeVar("T")
NOW = datetime.now(UTC)


def in_thread(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a loop of its own: Playwright's sync API holds this thread's."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(make()))  # type: ignore[arg-type]
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(60)
    if failure:
        raise failure[0]
    return result[0]


def write(url: str, *rows: Any) -> None:
    async def go() -> None:
        database = Database(url)
        try:
            async with database.write() as session:
                session.add_all(rows)
        finally:
            await database.dispose()

    in_thread(go)


class Hook(BaseHTTPRequestHandler):
    """A webhook receiver: 500 for the first `failures` requests, then 204."""

    failures = 1
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        Hook.seen.append(json.loads(body))
        status = 500 if len(Hook.seen) <= Hook.failures else 204
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    Hook.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


@pytest.fixture
def console(fresh_database_url: str, live_server: Any) -> Iterator[tuple[str, str]]:
    """A real server on loopback with tokens set, the relay running, no scheduler: (base URL,
    database URL). Callbacks are unsigned (loopback, no key), as in development."""
    write(
        fresh_database_url,
        new_job("job-run", JobState.PROCESSING, at=NOW - timedelta(minutes=2), media_id="m-run"),
        new_job(
            "job-fail",
            JobState.FAILED,
            at=NOW - timedelta(minutes=30),
            code="InternalError",
            message=f"could not decode {EVIL}",
            media_id=EVIL,
        ),
        new_job(
            "job-tag",
            JobState.SUCCEEDED,
            at=NOW - timedelta(minutes=20),
            result={"Keyword": [{"Tag": EVIL, "Times": ["3260", "4000"]}]},
        ),
        *(
            new_job(f"old-{i:02d}", JobState.SUCCEEDED, at=NOW - timedelta(hours=2, minutes=i))
            for i in range(60)
        ),
        CallbackEvent(
            dedup_key="stored-odd",
            event_type="AIMediaAuditComplete",
            body='{"EventType": "AIMediaAuditComplete"}',
            headers={},
            received_at=NOW,
            applied=False,
            reason="untracked_ai_type",
        ),
    )
    settings = Settings(
        database_url=fresh_database_url,
        scheduler="off",
        api_tokens=TOKEN,  # type: ignore[arg-type]
        notify_allow_private="on",
        notify_retry_schedule="0s",  # type: ignore[arg-type]
    )
    with live_server(create_app(settings)) as base:
        yield base, fresh_database_url


class Watched:
    """Console errors, script errors and CSP violations of a page; a 4xx the test itself asks
    for (a refused sign-in, a 404 page, a forged post) is allowed by its URL."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        self.allowed: list[str] = []
        page.add_init_script(
            "document.addEventListener('securitypolicyviolation', e => "
            "console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI))"
        )
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        where = message.location.get("url", "")
        if message.text.startswith("Failed to load resource") and any(
            part in where for part in self.allowed
        ):
            return
        self.problems.append(f"console error at {where}: {message.text}")

    def allow(self, url_part: str) -> None:
        self.allowed.append(url_part)


@pytest.fixture
def chromium(
    console: tuple[str, str], browser_type_launch_args: dict[str, Any]
) -> Iterator[Browser]:
    """The system Chromium, with pytest-playwright's launch arguments (tests/console/conftest.py).

    Started per test, after the server and its database (`console`), and stopped before they
    are: while Playwright's sync API runs it holds this thread's event loop, so nothing else
    could `asyncio.run` here (pytest-playwright's session-wide browser would keep it for every
    test after this module)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**browser_type_launch_args)
        yield browser
        browser.close()


# Not pytest-playwright's `browser_context_args`: that one starts its own session-wide Playwright.
CONTEXT = {"viewport": {"width": 1280, "height": 900}, "locale": "en-GB", "timezone_id": "UTC"}


@pytest.fixture
def context(chromium: Browser) -> Iterator[BrowserContext]:
    context = chromium.new_context(**CONTEXT)
    yield context
    context.close()


@pytest.fixture
def watched(context: BrowserContext) -> Iterator[Watched]:
    """A page watched for errors: the test fails if any happened."""
    watch = Watched(context.new_page())
    yield watch
    assert watch.problems == []


def sign_in(page: Page, base: str, target: str = "/ui/") -> None:
    page.goto(base + target)
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(base + target)


def test_sign_in_and_out_and_nothing_before(watched: Watched, console: tuple[str, str]) -> None:
    base, _ = console
    page = watched.page
    watched.allow("/ui/login")  # the wrong token below is answered 401
    page.goto(base + "/ui/jobs/job-fail")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=%2Fui%2Fjobs%2Fjob-fail"))
    shown = page.locator("main").inner_text()
    assert "InternalError" not in page.content()
    assert "could not decode" not in page.content()
    assert "job-fail" not in shown
    page.get_by_label("API token").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("not one of")
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(base + "/ui/jobs/job-fail")  # where the person was going
    expect(page.locator("#why-code")).to_have_text("InternalError")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/ui/login\?signed_out=1"))
    page.goto(base + "/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login"))


def test_every_page_loads_without_errors_and_escapes_what_it_shows(
    watched: Watched, console: tuple[str, str], hook: str
) -> None:
    base, url = console
    watched.allow("/ui/no-such-page")  # a 404 page, on purpose
    now = datetime.now(UTC)
    write(
        url,
        Subscription(
            url=hook + "?q=" + EVIL,
            description=EVIL,
            enabled=True,
            secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            source="api",
            cursor_seq=0,
            created_at=now,
            updated_at=now,
        ),
    )
    page = watched.page
    sign_in(page, base)
    since = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    for path, heading in [
        ("/ui/", "Overview"),
        ("/ui/jobs", "Jobs"),
        ("/ui/jobs/job-fail", "AIVideoTag job"),
        ("/ui/jobs/job-tag", "AIVideoTag job"),
        ("/ui/media/" + EVIL.replace("/", "%2F"), "Media"),
        ("/ui/subscriptions", "Subscriptions"),
        ("/ui/subscriptions/1", "Subscription 1"),
        (f"/ui/subscriptions/1/replay?since={since}", "Replay"),
        ("/ui/inbox", "Callback inbox"),
        ("/ui/scheduler", "Scheduler"),
        ("/ui/logout", "Sign out"),
        ("/ui/no-such-page", "Not found"),
    ]:
        page.goto(base + path)
        expect(page.locator("h1")).to_contain_text(heading)
        assert page.locator("img").count() == 0  # no injected element anywhere
        assert page.title() != "pwned"  # no injected handler ran
    page.goto(base + "/ui/jobs/job-fail")
    expect(page.locator("#why-message")).to_have_text(f"could not decode {EVIL}")
    page.goto(base + "/ui/jobs/job-tag")
    expect(page.locator("#tags-Keyword .tag")).to_have_text(EVIL)
    page.goto(base + "/ui/")
    for chart in ("finished", "duration", "callbacks", "deliveries"):
        svg = page.locator(f"#chart-{chart} svg")
        expect(svg).to_have_attribute("role", "img")
        assert (svg.locator("title").first.text_content() or "").strip() != ""


def test_a_running_job_turns_final_without_a_reload(
    watched: Watched, console: tuple[str, str]
) -> None:
    base, _ = console
    page = watched.page
    sign_in(page, base, "/ui/jobs/job-run")
    expect(page.locator("#job-state .badge").first).to_have_text("processing")
    expect(page.locator("#live-toggle")).to_be_visible()  # the script runs
    page.evaluate("window.stillTheSamePage = true")
    body = {
        "EventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "EventType": "AIVideoTagComplete",
        "JobId": "job-run",
        "MediaId": "m-run",
        "Status": "success",
        "Data": json.dumps({"Keyword": [{"Tag": "coffee", "Times": ["1000"]}]}),
    }
    assert httpx.post(base + "/callbacks/vod", json=body).status_code == 200  # as VOD sends it
    expect(page.locator("#job-state .badge").first).to_have_text("succeeded", timeout=10_000)
    expect(page.locator("#tags-Keyword")).to_contain_text("coffee")
    assert page.evaluate("window.stillTheSamePage") is True  # updated in place, not reloaded


def test_new_jobs_appear_marked_new_and_live_updates_pause(
    watched: Watched, console: tuple[str, str]
) -> None:
    base, url = console
    page = watched.page
    sign_in(page, base, "/ui/jobs")
    expect(page.locator("#live-toggle")).to_be_visible()
    write(url, new_job("job-new", JobState.PROCESSING, at=datetime.now(UTC)))
    row = page.locator("tr.new", has_text="job-new")
    expect(row).to_be_visible(timeout=10_000)
    page.get_by_role("button", name="Pause live updates").click()
    write(url, new_job("job-while-paused", JobState.PROCESSING, at=datetime.now(UTC)))
    page.wait_for_timeout(2500)  # longer than an update takes: nothing must arrive now
    assert page.locator("text=job-while-paused").count() == 0
    page.get_by_role("button", name="Resume live updates").click()
    expect(page.locator("tr", has_text="job-while-paused")).to_be_visible(timeout=10_000)


def test_filters_live_in_the_url_and_pages_follow_them(
    watched: Watched, console: tuple[str, str]
) -> None:
    base, _ = console
    page = watched.page
    sign_in(page, base, "/ui/jobs")
    page.get_by_label("state").select_option("succeeded")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"state=succeeded"))
    expect(page.locator("#jobs tbody tr")).to_have_count(50)
    first = page.locator("#jobs tbody tr").first.inner_text()
    page.get_by_role("link", name="older »").click()
    expect(page).to_have_url(re.compile(r"state=succeeded.*cursor=|cursor=.*state=succeeded"))
    expect(page.locator("#jobs tbody tr")).to_have_count(11)  # 61 succeeded: 50 + 11
    assert first not in page.locator("#jobs").inner_text()
    page.reload()
    expect(page.locator("#jobs tbody tr")).to_have_count(11)  # a bookmark holds the page
    page.go_back()
    expect(page.locator("#jobs tbody tr")).to_have_count(50)
    page.get_by_label("search").fill("job-fail")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(base + "/ui/jobs/job-fail")


def test_each_button_does_what_it_says(
    watched: Watched, console: tuple[str, str], hook: str
) -> None:
    base, url = console
    page = watched.page
    sign_in(page, base)
    created = httpx.post(
        base + "/subscriptions",
        json={"url": hook},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    sub = created.json()
    httpx.post(
        base + "/callbacks/vod",
        json={
            "EventTime": "2026-01-01T00:00:00Z",
            "EventType": "AIVideoTagComplete",
            "JobId": "job-run",
            "MediaId": "m-run",
            "Status": "success",
        },
    )
    page.goto(f"{base}/ui/subscriptions/{sub['id']}")
    retry = page.get_by_role("button", name="Retry").first
    for _ in range(50):  # the first attempt is answered 500: a dead letter (one try)
        if retry.count():
            break
        page.wait_for_timeout(200)
        page.reload()
    retry.click()
    expect(page.locator(".flash")).to_contain_text("queued again")
    page.wait_for_timeout(1500)
    page.reload()
    expect(page.locator("#deliveries")).to_contain_text("HTTP 204")  # the retry got through
    page.get_by_role("button", name="Send a test ping").click()
    expect(page.locator(".flash")).to_contain_text("test ping answered HTTP 204")
    assert Hook.seen[-1]["type"] == "ping"
    page.get_by_role("button", name="Disable").click()
    expect(page.locator("#sub-state")).to_have_text("disabled")
    page.get_by_role("button", name="Enable").click()
    expect(page.locator("#sub-state")).to_have_text("enabled")
    page.get_by_role("button", name="Rotate the secret").click()
    secret = page.locator("#new-secret code").inner_text()
    assert secret.startswith("whsec_")
    assert secret != sub["secret"]
    page.goto(f"{base}/ui/subscriptions/{sub['id']}")  # shown once: never on the page again
    expect(page.locator("#sub-url")).to_be_visible()
    assert page.locator("#new-secret").count() == 0
    assert secret not in page.content()
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    page.get_by_label("Replay failed deliveries since (UTC)").fill(since)
    page.get_by_role("button", name="Count them…").click()
    expect(page.locator("#replay-count")).to_contain_text(re.compile(r"^0 failed deliveries"))


def test_pages_work_with_javascript_off(chromium: Browser, console: tuple[str, str]) -> None:
    base, _ = console
    context = chromium.new_context(**CONTEXT, java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, base, "/ui/jobs")
        page.get_by_label("state").select_option("failed")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("#jobs tbody tr")).to_have_count(1)
        page.get_by_role("link", name="job-fail").click()
        expect(page.locator("#why-code")).to_have_text("InternalError")
        assert page.locator("#live-toggle").is_hidden()  # no script: no live control shown
    finally:
        context.close()


def test_a_forged_cross_site_post_is_refused(
    watched: Watched, console: tuple[str, str], hook: str, live_server: Any
) -> None:
    """Another site's page, open in the same browser while signed in, posts the disable form:
    refused, and the subscription stays enabled."""
    base, url = console
    httpx.post(
        base + "/subscriptions", json={"url": hook}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    page = watched.page
    watched.allow("/disable")  # refused with a 403, which is the point
    watched.allow("/favicon.ico")  # the other site's page has none
    sign_in(page, base)
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    evil_form = (
        f'<form id="f" method="post" action="{base}/ui/subscriptions/1/disable">'
        '<input name="csrf_token" value="guessed"><button>go</button></form>'
        f'<a id="link" href="{base}/ui/jobs/job-fail">a job</a>'
    )
    evil = Starlette(routes=[Route("/", lambda request: HTMLResponse(evil_form))])
    with live_server(evil) as other:
        other = other.replace("127.0.0.1", "localhost")  # another site, not just another port
        page.goto(other + "/")
        with page.expect_response(lambda r: "/disable" in r.url) as answer:
            page.locator("#f button").click()
        assert answer.value.status == 403
        # A plain link from that site still opens the page for the signed-in person: the
        # SameSite=Strict cookie is not sent on it, so the console takes one same-site hop.
        page.goto(other + "/")
        page.locator("#link").click()
        expect(page.locator("#why-code")).to_have_text("InternalError")
    page.goto(f"{base}/ui/subscriptions/1")
    expect(page.locator("#sub-state")).to_have_text("enabled")
