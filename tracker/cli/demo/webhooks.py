"""The demo's webhook receiver: a user's system taking the tracker's job changes on loopback.

It holds the subscription's secret and verifies every delivery with the official
`standardwebhooks` library, as a user's code would; it never uses the tracker's own signing.
A root's helper: an aiohttp server on a port the OS picks; no database.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable

from aiohttp import web
from standardwebhooks import Webhook

from tracker.cli.demo.scenario import FINAL

SECRET_BYTES = 24  # Standard Webhooks asks for 24 to 64 random bytes


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and base64 of random bytes (the library verifies
    with one but makes none)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class WebhookReceiver:
    """`POST /webhooks`: verified deliveries are noted (when each job's outcome arrived),
    forged ones refused with 400 and counted."""

    def __init__(self, secret: str, elapsed: Callable[[], str]) -> None:
        self.hook = Webhook(secret)
        self.elapsed = elapsed  # the demo's clock, as its lines show it
        self.delivered: dict[str, str] = {}  # JobId -> when its outcome's webhook arrived
        self.forged = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        """Listen on loopback; the URL to subscribe."""
        app = web.Application()
        app.router.add_post("/webhooks", self._receive)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/webhooks"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        try:
            event = self.hook.verify(await request.read(), dict(request.headers))
        except Exception:  # the library raises several kinds for a forged request
            self.forged += 1
            return web.Response(status=400)
        data = event.get("data", {})
        if data.get("state") in FINAL and data.get("job_id"):
            self.delivered.setdefault(data["job_id"], self.elapsed().strip())
        return web.Response(status=204)
