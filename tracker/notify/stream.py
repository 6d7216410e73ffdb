"""Waiting for changes: the long-poll of `GET /jobs/{id}?wait=` and its parameter.

A flow over short read sessions. It looks at the change log every WAIT_POLL seconds, so a
change committed by any replica (the log is shared) answers the waiter within that time.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta

from sqlalchemy import func, select

from tracker.db import Database
from tracker.errors import BadRequest
from tracker.models import JobChange

MAX_WAIT = timedelta(seconds=60)  # Temporal answers "not yet" at about 60 s (reference 4)
WAIT_POLL = 0.1  # seconds between looks at the log while waiting
_WAIT = re.compile(r"(\d{1,4}(?:\.\d{1,3})?)(ms|s)?")


def parse_wait(raw: str | None) -> timedelta | None:
    """`wait=30s`, `30`, `1500ms`; at most MAX_WAIT; anything else is a 400."""
    if raw is None:
        return None
    match = _WAIT.fullmatch(raw.strip())
    if match is None:
        raise BadRequest("wait: a duration such as 30s or 1500ms", parameter="wait")
    value = float(match[1]) / (1000 if match[2] == "ms" else 1)
    wait = timedelta(seconds=value)
    if wait > MAX_WAIT:
        raise BadRequest(f"wait: at most {int(MAX_WAIT.total_seconds())}s", parameter="wait")
    return wait


async def job_seq(database: Database, job_row_id: int) -> int:
    """The job's last committed change, 0 if none."""
    async with database.session() as session:
        found = await session.scalar(
            select(func.max(JobChange.seq)).where(JobChange.job_row_id == job_row_id)
        )
    return int(found or 0)


async def wait_for_job_change(
    database: Database, job_row_id: int, after: int, wait: timedelta
) -> bool:
    """True as soon as the job has a change past `after`; False when `wait` ran out."""
    deadline = time.monotonic() + wait.total_seconds()
    while True:
        if await job_seq(database, job_row_id) > after:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(WAIT_POLL, remaining))
