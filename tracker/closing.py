"""`async with` for what owns a connection pool or an HTTP session and closes it with `close()`."""

from __future__ import annotations

from typing import Self


class Closing:
    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
