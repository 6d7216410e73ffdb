"""Flows: what a submission would spend, for `"dry_run": true` and `tracker submit --dry-run`.

The durations come from VOD (`durations.py`), the jobs that would be skipped and the day's
budget from the database; nothing is claimed, reserved or sent. `Spending` replays a batch's
reservations in memory, in order, as the claims would make them, so a dry run says where the
budget would stop it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from tracker.clock import Clock, utcnow
from tracker.db import Database
from tracker.models import Job
from tracker.submit.batch import Item, plan
from tracker.submit.budget import (
    UNLIMITED,
    Budget,
    BudgetExceeded,
    day_of,
    day_rows,
    minutes,
    video_ms,
)
from tracker.submit.claims import SubmitRequest, blocking_jobs
from tracker.submit.durations import DurationUnknown, media_info, media_infos, with_duration
from tracker.submit.service import TypeOutcome
from tracker.submit.tally import Line, Reporter, Tally, skip_reason
from tracker.vod import INFOS_LIMIT, MediaInfo, VodClient


@dataclass
class Spending:
    """The day's budget as the next claims would find it: what each limited type has left,
    taken as submissions are planned."""

    budget: Budget
    left_ms: dict[str, int | None]  # None: no limit
    planned_ms: dict[str, int] = field(default_factory=dict)

    def fits(self, wanted: Mapping[str, int]) -> str | None:
        """The first type (in name order) `wanted` would take past its budget, else None."""
        for job_type in sorted(wanted):
            left = self.left_ms.get(job_type)
            if left is not None and wanted[job_type] > left:
                return job_type
        return None

    def take(self, wanted: Mapping[str, int]) -> None:
        for job_type, ms in wanted.items():
            self.planned_ms[job_type] = self.planned_ms.get(job_type, 0) + ms
            left = self.left_ms.get(job_type)
            if left is not None:
                self.left_ms[job_type] = left - ms


async def spending(database: Database, budget: Budget, now: datetime) -> Spending:
    """What each type has left of `now`'s UTC day (read, not locked: an estimate)."""
    async with database.session() as session:
        rows = await day_rows(session, day_of(now))
    left: dict[str, int | None] = {}
    for job_type, limit in budget.limits_ms.items():
        used = rows[job_type].used_ms if job_type in rows else 0
        left[job_type] = max(0, limit - used)
    return Spending(budget, left)


@dataclass(frozen=True)
class Estimate:
    """One media's dry run: its duration, the types it would submit, skip, or be refused for."""

    request: SubmitRequest  # with VOD's duration
    submit: tuple[str, ...]
    skipped: dict[str, Job]
    left_ms: dict[str, int | None]  # per type to submit: left before this submission
    over: str | None  # the type whose budget would refuse it

    @property
    def ms(self) -> int:
        return video_ms(self.request.duration_s)


async def estimate_media(
    database: Database,
    vod: VodClient,
    request: SubmitRequest,
    clock: Clock,
    budget: Budget,
    *,
    force: bool = False,
) -> Estimate:
    """A dry run of `submit_media`: raises what it would raise before a claim (MediaNotFound,
    DurationUnknown, VOD's error), and says what it would submit and spend."""
    request = with_duration(request, await media_info(vod, request.media_id), budget)
    skipped: dict[str, Job] = {}
    if not force:
        async with database.session() as session:
            found = await blocking_jobs(session, [request.media_id], request.types)
        skipped = {job_type: job for (_, job_type), job in found.items()}
    submit = tuple(t for t in request.types if t not in skipped)
    plan = await spending(database, budget, clock())
    wanted = dict.fromkeys(submit, video_ms(request.duration_s))
    left = {t: plan.left_ms.get(t) for t in submit}
    return Estimate(request, submit, skipped, left, plan.fits(wanted))


async def dry_run(
    database: Database,
    items: Sequence[Item],
    reporter: Reporter,
    *,
    force: bool,
    vod: VodClient | None = None,
    budget: Budget = UNLIMITED,
    clock: Clock = utcnow,
) -> Tally:
    """What `run_batch` would submit and spend, without claiming, reserving or sending: the
    durations from VOD when `vod` is given (INFOS_LIMIT media a call), the day's budget taken
    in order as the claims would take it. The first media it would refuse ends the plan, as
    it would stop the batch (`tally.over_budget`)."""
    tally = Tally(total=len(items), durations=vod is not None)
    reporter.started(len(items))
    now = clock()
    plan_ = await spending(database, budget, now)

    async def show(chunk: list[tuple[Item, dict[str, Job]]]) -> bool:
        """Each media's lines, in order; False once the budget would stop the batch."""
        asking = [item.media_id for item, blocked in chunk if set(item.types) - set(blocked)]
        infos = await media_infos(vod, asking) if vod is not None and asking else None
        for item, blocked in chunk:
            lines = [
                Line(TypeOutcome.SKIPPED, [t], skip_reason(j), skip_reason(j))
                for t, j in blocked.items()
            ]
            wanted = [t for t in item.types if t not in blocked]
            if wanted and infos is None:  # no durations: what would be sent, as before
                lines.append(Line(TypeOutcome.SUBMITTED, wanted, "", "would submit"))
            elif wanted and infos is not None:
                info = infos.found.get(item.media_id)
                line = _planned(item, wanted, info, plan_, budget, now)
                if isinstance(line, BudgetExceeded):
                    tally.over_budget = line
                    return False
                lines.append(line)
            tally.media += 1
            tally.media_submitted += any(line.outcome is TypeOutcome.SUBMITTED for line in lines)
            for line in lines:
                tally.add(item.media_id, line)
                reporter.media(item.media_id, line)
            reporter.advance()
        return True

    chunk: list[tuple[Item, dict[str, Job]]] = []
    going = True
    async for item, blocked in plan(database, items, force=force):
        chunk.append((item, blocked))
        if len(chunk) == INFOS_LIMIT:
            going = await show(chunk)
            chunk = []
            if not going:
                break
    if going and chunk:
        await show(chunk)
    tally.left_ms = dict(plan_.left_ms)
    return tally


def _planned(
    item: Item,
    wanted: list[str],
    info: MediaInfo | None,
    plan_: Spending,
    budget: Budget,
    now: datetime,
) -> Line | BudgetExceeded:
    if info is None:
        return Line(TypeOutcome.FAILED, wanted, "media_not_found", "VOD does not know it")
    request = SubmitRequest(item.media_id, item.types)
    try:
        with_duration(request, info, budget)
    except DurationUnknown as exc:
        return Line(TypeOutcome.FAILED, wanted, exc.code, exc.message)
    ms = video_ms(info.duration_s)
    need = dict.fromkeys(wanted, ms)
    over = plan_.fits(need)
    if over is not None:
        return BudgetExceeded(over, ms, plan_.left_ms[over] or 0, now)
    plan_.take(need)
    return Line(TypeOutcome.SUBMITTED, wanted, "", f"{minutes(ms):g} min", ms)
