"""A webhook receiver on a loopback port, verifying each delivery as a user's system would:
with the official `standardwebhooks` library."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook

Behaviour = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


async def accept(request: web.Request, n: int) -> web.StreamResponse:
    return web.Response(status=204)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    payload: Any
    verified: bool
    at: float


@dataclass
class Receiver:
    """Records every request; `behaviour(request, n)` answers the n-th (0-based)."""

    secret: str | None = None
    behaviour: Behaviour = accept
    received: list[Received] = field(default_factory=list)
    url: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = False
        payload: Any = None
        if self.secret is not None:
            try:
                payload = Webhook(self.secret).verify(body, headers)
                verified = True
            except Exception:  # the library raises several kinds on a bad signature
                verified = False
        else:
            payload = json.loads(body)
        n = len(self.received)
        self.received.append(Received(headers, body, payload, verified, time.monotonic()))
        self.arrived.set()
        return await self.behaviour(request, n)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while len(self.received) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{len(self.received)} of {count} deliveries arrived")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                continue
