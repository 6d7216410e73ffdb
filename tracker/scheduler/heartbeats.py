"""Heartbeats: each scheduled job's last run, written by every replica, judged for /readyz.

Statements: take a session, never commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.config import Settings
from tracker.db import insert
from tracker.models import Heartbeat
from tracker.scheduler.leases import RECONCILE_LEASE, lease_holder
from tracker.scheduler.retention import RETENTION_INTERVAL

# A job is late when it has not finished for two intervals and this much more.
LATE_SLACK = timedelta(minutes=1)


async def record_start(session: AsyncSession, name: str, owner: str, now: datetime) -> None:
    """A run of `name` began; the previous run's finish, duration and summary stay visible."""
    stmt = insert(session, Heartbeat).values(name=name, owner=owner, started_at=now)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[Heartbeat.name],
            set_={"owner": stmt.excluded.owner, "started_at": stmt.excluded.started_at},
        )
    )


async def record_finish(
    session: AsyncSession,
    name: str,
    owner: str,
    started: datetime,
    now: datetime,
    *,
    duration: float,
    ok: bool,
    summary: str,
) -> None:
    """The run that began at `started` ended; a newer run (another replica's) is not overwritten."""
    await session.execute(
        update(Heartbeat)
        .where(Heartbeat.name == name, Heartbeat.owner == owner, Heartbeat.started_at == started)
        .values(finished_at=now, duration_s=duration, ok=ok, summary=summary[:2000])
    )


def job_intervals(settings: Settings) -> dict[str, timedelta]:
    return {
        "sweep": settings.sweep_interval,
        "reconcile": settings.reconcile_interval,
        "confirm": settings.confirm_interval,
        "recover": settings.recover_interval,
        "retention": RETENTION_INTERVAL,
    }


# Most severe first: the overall status is the most severe of the jobs'.
SEVERITY = ("stuck", "late", "failing", "never", "running", "ok", "off")


async def scheduler_status(
    session: AsyncSession, settings: Settings, now: datetime
) -> dict[str, Any]:
    """Each scheduled job's last run (`judge_jobs`) and the reconcile lease's holder."""
    jobs = judge_jobs(list(await session.scalars(select(Heartbeat))), settings, now)
    lease = await lease_holder(session, RECONCILE_LEASE, now)
    return {
        "status": min((job["state"] for job in jobs.values()), key=SEVERITY.index),
        "jobs": jobs,
        "reconcile_lease": (
            {"owner": lease.owner, "expires_at": lease.expires_at.isoformat()} if lease else None
        ),
    }


def judge_jobs(
    heartbeats: Iterable[Heartbeat], settings: Settings, now: datetime
) -> dict[str, dict[str, Any]]:
    """Each scheduled job's last run, from the heartbeats every replica writes, judged against
    its interval: `stuck` (running for over two intervals), `late` (no finish for over two
    intervals), `failing` (last run raised), `never`, `running`, `ok`, `off`. /readyz and the
    `tracker_scheduler_job_state` metric both say this."""
    beats = {beat.name: beat for beat in heartbeats}
    jobs: dict[str, Any] = {}
    for name, interval in job_intervals(settings).items():
        beat = beats.get(name)
        late_after = 2 * interval + LATE_SLACK
        if beat is None:
            off = (name in ("reconcile", "recover") and not settings.has_vod_credentials) or (
                name == "confirm"
                and not (settings.has_vod_credentials and settings.confirms_callbacks)
            )
            jobs[name] = {"state": "off" if off else "never"}
            continue
        running = beat.finished_at is None or beat.finished_at < beat.started_at
        if running:
            state = "stuck" if now - beat.started_at > late_after else "running"
        elif beat.finished_at is not None and now - beat.finished_at > late_after:
            state = "late"
        else:
            state = "ok" if beat.ok else "failing"
        jobs[name] = {
            "state": state,
            "every_s": interval.total_seconds(),
            "owner": beat.owner,
            "started_at": beat.started_at.isoformat(),
            "finished_at": beat.finished_at.isoformat() if beat.finished_at else None,
            "duration_s": beat.duration_s,
            "ok": beat.ok,
            "summary": beat.summary,
        }
    return jobs
