"""Simulator, job engine: AI jobs created with their fate drawn, run from `init` to their outcome.

Each goes `init` -> `processing` -> `success`/`fail` (vod-reference.md 2, 3.1), then to the
callbacks.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from tracker.clock import Clock, utcnow
from tracker.fakevod.faults import Faults
from tracker.fakevod.jobs import FakeJob, draw_result


class JobEngine:
    """The truth (`jobs`) and the tasks that move it. Everything a job will do wrong is drawn when
    it is created, from one seeded generator, so that the same seed tells the same story however
    often the tracker polls."""

    def __init__(
        self, faults: Faults, seed: int | None, publish: Callable[[FakeJob], Awaitable[None]]
    ) -> None:
        self.faults = faults
        self.jobs: dict[str, FakeJob] = {}
        self.rng = random.Random(seed)  # ids, outcomes, results, delivery faults
        # CreateTime and CompleteTime; tests may share their injected clock.
        self.clock: Clock = utcnow
        self._publish = publish
        self._tasks: set[asyncio.Task[None]] = set()

    def create(
        self, media_id: str, job_type: str, callback_url: str | None, extend: str | None
    ) -> FakeJob:
        faults = self.faults
        job = FakeJob(
            creation_time=self.clock(),
            job_id=self.hex(),
            media_id=media_id,
            type=job_type,
            callback_url=callback_url,
            extend=extend,
            will_fail=self.chance(faults.fail_rate),
            drop=self.chance(faults.drop_rate) or faults.take("drop_next"),
            duplicate=self.chance(faults.duplicate_rate),
            late=self.chance(faults.late_rate),
            stuck=self.chance(faults.stuck_rate) or faults.take("stuck_next"),
        )
        job.data = draw_result(self.rng, job_type)  # drawn now so the seed fixes it
        self.jobs[job.job_id] = job
        self.spawn(self._run(job))
        return job

    def emit_unsolicited(self, media_id: str | None = None) -> FakeJob:
        """A DNA job nobody submitted, as VOD runs after each upload (section 7)."""
        job = self.create(media_id or self.hex(), "AIMediaDNA", None, None)
        job.submitted = False
        return job

    async def _run(self, job: FakeJob) -> None:
        delay = self.faults.delay
        await asyncio.sleep(delay * 0.25)
        job.status = "processing"
        await asyncio.sleep(delay * 0.75 + (self.faults.stuck_seconds if job.stuck else 0.0))
        job.complete_time = self.clock()
        if job.will_fail:
            # No failed AI event is published (section 6.2 [U]): a plausible code, empty Data.
            job.status, job.code, job.message, job.data = (
                "fail",
                "InternalError",
                "The AI job failed.",
                "",
            )
        else:
            job.status, job.code, job.message = "success", "0", "OK"
        await self._publish(job)

    def spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self, timeout: float) -> None:  # noqa: ASYNC109 - the agreed interface
        """Wait until every job finished and every delivery ended; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while self._tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"fake VOD still busy: {len(self._tasks)} tasks")
            await asyncio.wait(set(self._tasks), timeout=remaining)

    async def stop(self) -> None:
        """Cancel what is running; the jobs stay as they are (the truth survives stopping)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def chance(self, rate: float, rng: random.Random | None = None) -> bool:
        return rate > 0 and (rng or self.rng).random() < rate

    def hex(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"
