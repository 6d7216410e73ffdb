"""Simulator, listening: its HTTP services on a port (0: a free one), one clear error if taken."""

from __future__ import annotations

import os

from aiohttp import web


class CannotListen(OSError):
    """The address is taken (or not ours): `cannot listen on HOST:PORT: Address already in use`."""


async def listen(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve `app` on host:port; the runner (to clean up) and the URL it is reachable at."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CannotListen(exc.errno, f"cannot listen on {host}:{port}: {reason}") from None
    bound = runner.addresses[0]
    shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
    return runner, f"http://{shown}:{bound[1]}"
