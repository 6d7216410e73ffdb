"""Takes the README's console screenshots from a real run: the VOD simulator (with failures,
lost and repeated callbacks, a stuck job), `tracker serve` on loopback, jobs submitted through
`POST /jobs`, a webhook receiver that fails now and then, a few refused callbacks; then the
system Chromium signs in and photographs the pages.

    python docs/screenshots.py            # writes docs/console-*.png
    python docs/screenshots.py --out /tmp # elsewhere
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
import uvicorn
from aiohttp import web
from playwright.async_api import async_playwright

from tracker.app import create_app
from tracker.config import Settings
from tracker.db import upgrade
from tracker.fakevod import FakeVod

HERE = Path(__file__).resolve().parent
KEY_ID, KEY_SECRET, AUTH_KEY, TOKEN = "LTAIshots", "ShotsSecret1", "ShotsKey123", "shots-token"
MEDIA = 16  # each submitted for tagging and fingerprinting


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def receiver() -> tuple[web.AppRunner, str]:
    """A subscriber that answers 500 to every third delivery."""
    seen = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal seen
        await request.read()
        seen += 1
        return web.Response(status=500 if seen % 3 == 0 else 204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/hook"


async def run(out: Path, chromium: str, work: Path, url: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    fake = FakeVod(
        access_key_id=KEY_ID,
        access_key_secret=KEY_SECRET,
        callback_url=f"{base}/callbacks/vod",
        auth_key=AUTH_KEY,
        delay=1.5,
        fail_rate=0.2,
        drop_rate=0.15,
        duplicate_rate=0.3,
        stuck_rate=0.08,
        stuck_seconds=40,
        seed=11,
    )
    await fake.start()
    hooks, hook_url = await receiver()
    settings = Settings(
        database_url=url,
        host="127.0.0.1",
        port=port,
        access_key_id=KEY_ID,
        access_key_secret=KEY_SECRET,  # type: ignore[arg-type]
        vod_endpoint=fake.url,
        callback_url=f"{base}/callbacks/vod",
        callback_auth_key=AUTH_KEY,  # type: ignore[arg-type]
        api_tokens=TOKEN,  # type: ignore[arg-type]
        stale_after=timedelta(seconds=8),
        sweep_interval=timedelta(seconds=1),
        reconcile_interval=timedelta(seconds=1),
        reconcile_grace=timedelta(seconds=4),
        confirm_interval=timedelta(seconds=1),
        notify_allow_private="on",
        notify_retry_schedule="0s,1s",  # type: ignore[arg-type]
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    serving = asyncio.create_task(server.serve())
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            while not server.started:  # noqa: ASYNC110 - uvicorn has a flag, not an event
                await asyncio.sleep(0.05)
            await http.post("/subscriptions", json={"url": hook_url}, headers=bearer)
            for n in range(MEDIA):
                body = {"media_id": f"video-{n:02d}", "types": ["AIVideoTag", "AIMediaDNA"]}
                await http.post("/jobs", json=body, headers=bearer)
                await asyncio.sleep(0.3)
            # What an operator setting up VOD meets: a wrong key, and VOD signing another URL.
            stamp = str(int(time.time()))
            await http.post(
                "/callbacks/vod",
                content=b"{}",
                headers={"X-VOD-TIMESTAMP": stamp, "X-VOD-SIGNATURE": "0" * 32},
            )
            await asyncio.sleep(25)  # callbacks, confirmations, reconciliation, the stale sweep
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
            )
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(f"{base}/ui/")
            await page.get_by_label("API token").fill(TOKEN)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(f"{base}/ui/")
            await page.screenshot(path=str(out / "console-overview.png"), full_page=True)
            await page.goto(f"{base}/ui/jobs?state=failed&type=AIVideoTag")
            link = page.locator("#jobs tbody tr a").first
            if await link.count() == 0:  # no tagging job failed this run: any failed one
                await page.goto(f"{base}/ui/jobs?state=failed")
                link = page.locator("#jobs tbody tr a").first
            await link.click()
            await page.wait_for_selector("#timeline")
            await page.screenshot(path=str(out / "console-job.png"), full_page=True)
            await page.goto(f"{base}/ui/jobs?state=succeeded&type=AIVideoTag")
            await page.locator("#jobs tbody tr a").first.click()
            await page.wait_for_selector("#timeline")
            await page.screenshot(path=str(out / "console-result.png"), full_page=True)
            await browser.close()
    finally:
        server.should_exit = True
        await serving
        await hooks.cleanup()
        await fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Chromium: apt-get install chromium")
    work = Path(tempfile.mkdtemp(prefix="tracker-shots-"))
    try:
        url = f"sqlite+aiosqlite:///{work / 'shots.db'}"
        upgrade(url)  # before the event loop: Alembic runs one of its own
        asyncio.run(run(args.out, chromium, work, url))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name in sorted(args.out.glob("console-*.png")):
        sys.stdout.write(f"{name.name}\n")


if __name__ == "__main__":
    main()
