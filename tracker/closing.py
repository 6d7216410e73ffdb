"""`async with` for what owns a connection pool or an HTTP session, and the one HTTP session holder.

No database here, and core: it imports no wing. Every aiohttp session the tracker keeps for more
than one request (the VOD client, the MNS client, the relay's webhooks) is held by `HttpSession`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

import aiohttp


class Closing:
    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class HttpSession(Closing):
    """One aiohttp session, built by `build` on first use and again after it was closed.

    Built on first use because aiohttp binds a session (and its connector) to the running event
    loop: a client is often made before the loop runs (the CLI, `create_app`), and a session made
    there would be unusable. `close()` ends it; calling the holder after that builds a new one.
    """

    def __init__(self, build: Callable[[], aiohttp.ClientSession]) -> None:
        self._build = build
        self._session: aiohttp.ClientSession | None = None

    def __call__(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._build()
        return self._session

    @property
    def opened(self) -> bool:
        """Whether a session is held (built and not closed by `close()`)."""
        return self._session is not None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
