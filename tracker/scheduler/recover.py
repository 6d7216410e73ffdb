"""Flows: lost JobIds, found by media: the job VOD made for a submission whose answer never came.

A submitter that died mid-call leaves a job `submitting`; a lost answer (timeout, cut connection)
leaves it `submit_unknown`. Neither has a JobId, so reconciliation (ListAIJob, by JobId) cannot
look it up, and only a callback for the same media and type could resolve it. After
`recover_after`, the media of each such job is listed with `ListJobInfo(MediaId, JobType=ai)`
(../shared/vod-joblookup-reference.md 1, 7); the type of each candidate comes from ListAIJob, or
from GetJobDetail for ids ListAIJob does not know. A job of the right type created after the
submit attempt began, and held by no other row, is adopted with its JobId and VOD's state through
`tracker.transitions.adopt_job_id`. When none has appeared after `recover_give_up`, the job
becomes `submit_failed` ("VOD has no such job"), which lets `tracker submit` send it again.

`recover_lost_job_ids` takes the database and the VOD client and commits each adoption or give-up
on its own, never holding a write transaction across a VOD call; the jobs it reads are found by
`lookups.py`, and adoption and give-up are `tracker.transitions` statements.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from tracker.clock import Clock
from tracker.config import Settings
from tracker.db import Database
from tracker.scheduler.lookups import Waiting, held_job_ids, jobs_to_recover
from tracker.scheduler.report import RunReport
from tracker.scheduler.verdicts import status_outcome
from tracker.transitions import CREATE_SKEW, Outcome, adopt_job_id, give_up_submit
from tracker.vod import (
    LIST_LIMIT,
    JobInfo,
    VodClient,
    VodClients,
    VodError,
    VodOutcomeUnknown,
    VodThrottled,
    VodUnreachable,
)

log = logging.getLogger(__name__)

# A run stops after this many VOD error answers in a row.
MAX_ERRORS = 3
NO_SUCH_JOB = "NoSuchJob"
# GetJobDetail's trigger of workflow jobs (joblookup 2): never one we submitted.
AUTO_TRIGGER = "auto"


@dataclass(frozen=True)
class Candidate:
    """A job VOD has for the media, typed, not held by any row when looked at."""

    job_id: str
    type: str
    created: datetime
    outcome: Outcome
    trigger: str | None = None  # GetJobDetail's, when it was asked


@dataclass
class Report(RunReport):
    """What one recovery run did; its str() is the run's log line."""

    waiting: int = 0
    media: int = 0
    adopted: int = 0
    gave_up: int = 0
    still_waiting: int = 0
    raced: int = 0

    def summary(self) -> str:
        return (
            f"looked up {self.media} media for {self.waiting} jobs without a JobId: "
            f"{self.adopted} adopted, {self.gave_up} given up (VOD has no such job), "
            f"{self.still_waiting} still waiting"
        )

    def notes(self) -> list[str]:
        if self.raced:
            return [f"{self.raced} resolved meanwhile by a callback or the submitter"]
        return []


def pick(candidates: Sequence[Candidate], job: Waiting, taken: set[str]) -> Candidate | None:
    """The earliest untaken candidate of the job's type created within its attempt's window."""
    since = job.started.replace(microsecond=0) - CREATE_SKEW
    fitting = [
        c
        for c in candidates
        if c.type == job.type
        and c.job_id not in taken
        and c.created >= since
        and (job.until is None or c.created < job.until + CREATE_SKEW)
    ]
    return min(fitting, key=lambda c: (c.created, c.job_id), default=None)


# --- the flow -----------------------------------------------------------------------------------


class _Stop(Exception):
    """VOD cannot be reached or keeps refusing: end the run, try again next time."""


async def recover_lost_job_ids(
    database: Database,
    vod: VodClients,
    settings: Settings,
    clock: Clock,
    *,
    keep_going: Callable[[], bool] = lambda: True,
) -> Report:
    """Adopt, for every job waiting for its JobId longer than `recover_after`, the job VOD
    created for its submit attempt; give the job up as `submit_failed` when VOD still has none
    after `recover_give_up`.

    Each media is listed once per run (ListJobInfo, then ListAIJob or GetJobDetail for the
    types), within the client's limits: 15 calls per second for ListJobInfo and GetJobDetail.
    Idempotent: an adopted or given-up job is no longer waiting, and a JobId held by any row is
    never adopted again. Jobs of one media and type are matched newest attempt first, each with
    the earliest job created after it began. Stops early when `keep_going()` turns false (the
    lease was lost) or VOD keeps failing; a media that could not be looked up is never given up.
    """
    report = Report()
    async with database.session() as session:
        waiting = await jobs_to_recover(session, settings, clock())
    report.waiting = len(waiting)
    # A media is looked up in the region its jobs were submitted in, one region at a time.
    by_media: dict[tuple[str, str], list[Waiting]] = defaultdict(list)
    for job in waiting:
        by_media[(job.region or settings.vod_region, job.media_id)].append(job)
    errors_in_a_row = 0
    for (region, media_id), jobs in by_media.items():
        if not keep_going():
            report.stopped = "lease lost"
            break
        try:
            complete = await _recover_media(
                database, vod.for_region(region), settings, clock, media_id, jobs, report
            )
        except _Stop as exc:
            report.errors += 1
            report.stopped = str(exc)
            break
        report.media += 1
        errors_in_a_row = 0 if complete else errors_in_a_row + 1
        if errors_in_a_row >= MAX_ERRORS:
            report.stopped = f"{errors_in_a_row} media in a row could not be looked up"
            break
    return report


async def _recover_media(
    database: Database,
    vod: VodClient,
    settings: Settings,
    clock: Clock,
    media_id: str,
    jobs: list[Waiting],
    report: Report,
) -> bool:
    """Look one media up and settle its waiting jobs; False if VOD's answers were incomplete
    (then nothing is given up)."""
    try:
        infos = await vod.list_job_info(media_id)
    except (VodUnreachable, VodThrottled, VodOutcomeUnknown) as exc:
        raise _Stop(f"ListJobInfo: {type(exc).__name__}: {exc}") from exc
    except VodError as exc:
        log.warning("ListJobInfo refused media %s: %s", media_id, exc)
        report.errors += 1
        report.still_waiting += len(jobs)
        return False
    earliest = min(job.started for job in jobs).replace(microsecond=0) - CREATE_SKEW
    # An item without a CreateTime may still be ours: ListAIJob or GetJobDetail may date it.
    fresh = [i for i in infos if i.create_time is None or i.create_time >= earliest]
    async with database.session() as session:
        held = await held_job_ids(session, [i.job_id for i in fresh])
    fresh = [i for i in fresh if i.job_id not in held]
    candidates, complete = await _typed(vod, media_id, fresh, report)

    taken: set[str] = set()
    for job in sorted(jobs, key=lambda j: (j.started, j.id), reverse=True):
        found = pick(candidates, job, taken)
        while found is not None and not await _submitted_by_api(vod, found):
            taken.add(found.job_id)  # VOD ran it on its own: never ours
            found = pick(candidates, job, taken)
        if found is not None:
            taken.add(found.job_id)
            await _adopt(database, clock, job, found, report)
        elif complete and clock() - job.started >= settings.recover_give_up:
            await _give_up(database, clock, settings, job, report)
        else:
            report.still_waiting += 1
    return complete


async def _typed(
    vod: VodClient, media_id: str, infos: Sequence[JobInfo], report: Report
) -> tuple[list[Candidate], bool]:
    """The AI type and state of each candidate: ListAIJob for ten at a time, GetJobDetail for
    the ids it does not know (joblookup 0). False when some could not be typed."""
    dated = {i.job_id: i.create_time for i in infos}
    candidates: dict[str, Candidate] = {}
    ids = list(dated)
    for start in range(0, len(ids), LIST_LIMIT):
        chunk = ids[start : start + LIST_LIMIT]
        try:
            listed = await vod.list_ai_jobs(chunk)
        except (VodUnreachable, VodThrottled, VodOutcomeUnknown) as exc:
            raise _Stop(f"ListAIJob: {type(exc).__name__}: {exc}") from exc
        except VodError as exc:
            log.warning("ListAIJob refused %d ids of media %s: %s", len(chunk), media_id, exc)
            continue  # GetJobDetail below, one by one
        for status in listed.jobs:
            created = dated.get(status.job_id) or status.creation_time
            if status.job_id in dated and created is not None:
                outcome = status_outcome(status)
                candidates[status.job_id] = Candidate(status.job_id, status.type, created, outcome)
    complete = True
    for job_id in ids:
        if job_id in candidates:
            continue
        try:
            detail = await vod.get_job_detail(job_id)
        except (VodUnreachable, VodThrottled, VodOutcomeUnknown) as exc:
            raise _Stop(f"GetJobDetail: {type(exc).__name__}: {exc}") from exc
        except VodError as exc:
            log.warning("GetJobDetail refused %s of media %s: %s", job_id, media_id, exc)
            report.errors += 1
            complete = False
            continue
        if detail is None or (detail.trigger or "").lower() == AUTO_TRIGGER:
            continue  # not an AI job, or a workflow's: never one we submitted
        created = dated.get(job_id) or detail.create_time
        if created is None:
            continue  # cannot be shown to come after the attempt
        outcome = Outcome(
            job_id=job_id,
            type=detail.type,
            status=detail.status,
            media_id=detail.media_id or media_id,
            event_time=detail.complete_time or detail.create_time,
            completed_at=detail.complete_time,
        )
        candidates[job_id] = Candidate(job_id, detail.type, created, outcome, detail.trigger)
    return list(candidates.values()), complete


async def _submitted_by_api(vod: VodClient, candidate: Candidate) -> bool:
    """False for a job GetJobDetail says VOD started itself (`Trigger=Auto`, joblookup 2), such
    as fingerprinting after an upload. Asked only of the job about to be adopted; if VOD cannot
    say, the job is taken for ours (ListAIJob already matched its media and type)."""
    trigger = candidate.trigger
    if trigger is None:
        try:
            detail = await vod.get_job_detail(candidate.job_id)
        except (VodUnreachable, VodThrottled, VodOutcomeUnknown) as exc:
            raise _Stop(f"GetJobDetail: {type(exc).__name__}: {exc}") from exc
        except VodError as exc:
            log.info("GetJobDetail refused %s, taken as submitted: %s", candidate.job_id, exc)
            return True
        trigger = detail.trigger if detail is not None else None
    return (trigger or "").lower() != AUTO_TRIGGER


async def _adopt(
    database: Database, clock: Clock, job: Waiting, found: Candidate, report: Report
) -> None:
    try:
        async with database.write() as session:
            adopted = await adopt_job_id(session, job.id, found.outcome, clock())
    except IntegrityError:
        adopted = False  # a callback inserted a row with this JobId at the same moment
    if adopted:
        report.adopted += 1
        log.info(
            "job %d (%s %s): adopted JobId %s, created %s, from VOD's job list",
            job.id,
            job.media_id,
            job.type,
            found.job_id,
            found.created.isoformat(),
        )
    else:
        report.raced += 1


async def _give_up(
    database: Database, clock: Clock, settings: Settings, job: Waiting, report: Report
) -> None:
    message = (
        f"VOD has no such job: ListJobInfo lists no {job.type} job for media {job.media_id} "
        f"created after the submit attempt of {job.started.isoformat()} within "
        f"{_span(settings.recover_give_up)}; `tracker submit` may send it again"
    )
    async with database.write() as session:
        gave_up = await give_up_submit(session, job.id, clock(), code=NO_SUCH_JOB, message=message)
    if gave_up:
        report.gave_up += 1
        log.warning("job %d: %s", job.id, message)
    else:
        report.raced += 1


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"
