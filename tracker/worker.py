"""Background workers: the one life cycle of the tasks a process runs beside its requests.

No database here, and core: it imports no wing. A worker runs `run()` in `tasks` tasks of its own
from `start()` until `stop()`. `wake()` ends the current `idle()` early, so work this process
has just committed is taken at once instead of at the next poll. `stop()` sets `stopping`, wakes
the tasks and gives the turn under way up to `grace` seconds to end by itself (cancelling a turn
mid-query would strand its connection), then cancels what is left. Start, stop, a grace that ran
out and a task that died of an exception are logged, under the worker's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)

GRACE = 10.0  # seconds a stopping worker's turn may take to end by itself


class Worker:
    """Subclasses write `run()` (one task's loop), and `setup()`/`teardown()` for what they
    hold beyond their tasks: `setup()` runs before the tasks start, `teardown()` after they
    ended."""

    def __init__(self, name: str, *, tasks: int = 1, grace: float = GRACE) -> None:
        self.name = name
        self.tasks = tasks
        self.grace = grace  # 0: cancelled at once (nothing they do can be stranded)
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        raise NotImplementedError

    async def setup(self) -> None:
        """Before the tasks start; raising here means the worker does not start."""

    async def teardown(self) -> None:
        """After the tasks ended (also when `stop()` is called without a `start()`)."""

    async def start(self) -> None:
        await self.setup()
        self._stopped.clear()
        self._running = [asyncio.create_task(self._run()) for _ in range(self.tasks)]
        log.info("%s started", self.name)

    def wake(self) -> None:
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopped.is_set()

    async def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        running, self._running = self._running, []
        if running:
            late = set(running)
            if self.grace > 0:
                # asyncio.wait leaves the tasks running at the timeout (a shield): they are
                # cancelled below, and only then.
                _, late = await asyncio.wait(running, timeout=self.grace)
                if late:
                    log.warning("%s: still busy after %gs; cancelled", self.name, self.grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        await self.teardown()
        if running:
            log.info("%s stopped", self.name)

    async def idle(self, seconds: float) -> None:
        """Wait until woken or until `seconds` passed. A wake-up while the caller works is kept
        for its next `idle()`, which then returns at once."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def pause(self, seconds: float) -> None:
        """Sleep `seconds`, unless `stop()` is called meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)

    async def _run(self) -> None:
        try:
            await self.run()
        except Exception:  # a bug: the task is gone, say so instead of vanishing
            log.exception("%s: a task ended by an exception", self.name)
            raise
