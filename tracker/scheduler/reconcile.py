"""Flows: reconciliation, asking VOD (ListAIJob) about jobs that did not hear back.

HTTP callbacks can be lost for good (three tries, then VOD drops them: vod-reference.md 6.5), so
jobs that stay unfinished are looked up by JobId. `reconcile_open_jobs` takes the database and the
VOD client and commits per batch, never holding a write transaction across a VOD call; what it
reads is in `lookups.py`, what it writes in `verdicts.py`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tracker.clock import Clock
from tracker.config import Settings
from tracker.db import Database
from tracker.scheduler.lookups import count_unlistable, jobs_to_reconcile
from tracker.scheduler.report import RunReport
from tracker.scheduler.verdicts import AnswerCounts, apply_list_result
from tracker.vod import (
    LIST_LIMIT,
    VodClient,
    VodClients,
    VodError,
    VodOutcomeUnknown,
    VodThrottled,
    VodUnreachable,
    is_job_id,
)

log = logging.getLogger(__name__)


# A run gives up after this many VOD error answers in a row. A refused batch is asked again id by
# id, so an id VOD chokes on costs one answer, and the ids beside it still get theirs.
MAX_ERRORS = 3


@dataclass
class Report(AnswerCounts, RunReport):
    """What one reconciliation run did; its str() is the run's log line."""

    checked: int = 0
    unlistable: int = 0
    malformed: int = 0
    refused: int = 0

    def summary(self) -> str:
        return (
            f"checked {self.checked} jobs: {self.finished} finished, {self.running} still "
            f"running, {self.lost} lost, {self.unchanged} unchanged"
        )

    def notes(self) -> list[str]:
        notes = []
        if self.confirmed or self.contradicted:
            notes.append(f"callbacks {self.confirmed} confirmed, {self.contradicted} contradicted")
        if self.unlistable:
            notes.append(
                f"{self.unlistable} stale jobs have no JobId (submit outcome unknown) and "
                "cannot be looked up by JobId: left to recovery by media (recover)"
            )
        if self.malformed:
            notes.append(
                f"{self.malformed} JobIds are not of VOD's shape (a comma would split "
                "ListAIJob's list) and cannot be looked up: skipped"
            )
        if self.refused:
            notes.append(f"{self.refused} JobIds refused by VOD one by one")
        return notes


def by_region(ids: dict[str, str | None], default: str) -> dict[str, list[str]]:
    """JobIds grouped by region, in order; a job of no known region (learned from a callback)
    is looked up in `default`, the region whose callbacks `tracker vod callback set` sets up."""
    groups: dict[str, list[str]] = {}
    for job_id, region in ids.items():
        groups.setdefault(region or default, []).append(job_id)
    return groups


async def reconcile_open_jobs(
    database: Database,
    vod: VodClients,
    settings: Settings,
    clock: Clock,
    *,
    keep_going: Callable[[], bool] = lambda: True,
    only_pending: bool = False,
) -> Report:
    """Look up every job due for reconciliation with ListAIJob, region by region with that
    region's client, 10 per call within the client's shared rate limit, and apply the answers.
    No database transaction is open while VOD is called: each answer is applied in its own short
    write. Stops early when `keep_going()` turns false (the lease was lost); a region whose VOD
    keeps failing is given up for this run, the others still go ahead. `only_pending`: just the
    callbacks awaiting confirmation (the frequent `confirm` job)."""
    report = Report()
    async with database.session() as session:
        ids = await jobs_to_reconcile(session, settings, clock(), only_pending=only_pending)
        if not only_pending:
            report.unlistable = await count_unlistable(session)
    # An id that is not of VOD's shape (stored before the receiver checked ids) would spoil any
    # batch it joined: a comma in it alone makes ListAIJob refuse the whole list.
    listable = {job_id: region for job_id, region in ids.items() if is_job_id(job_id)}
    report.malformed = len(ids) - len(listable)
    if report.malformed:
        log.warning("%d JobIds are not of VOD's shape: not looked up", report.malformed)
    stops: list[str] = []
    groups = by_region(listable, settings.vod_region)
    for region, job_ids in groups.items():
        if not keep_going():
            stops.append("lease lost")
            break
        stopped = await _reconcile_region(
            database, vod.for_region(region), job_ids, clock, keep_going, report
        )
        if stopped is not None:
            stops.append(stopped if len(groups) < 2 else f"{region}: {stopped}")
    report.stopped = "; ".join(stops) or None
    return report


async def _reconcile_region(
    database: Database,
    vod: VodClient,
    ids: Sequence[str],
    clock: Clock,
    keep_going: Callable[[], bool],
    report: Report,
) -> str | None:
    """One region's share of a run; returns why it stopped early, if it did."""
    batches = deque(_chunks(ids, LIST_LIMIT))
    errors_in_a_row = 0
    while batches:
        batch = batches.popleft()
        if not keep_going():
            return "lease lost"
        try:
            result = await vod.list_ai_jobs(batch)
        except (VodUnreachable, VodThrottled, VodOutcomeUnknown) as exc:
            report.errors += 1
            return f"{type(exc).__name__}: {exc}"
        except VodError as exc:
            report.errors += 1
            log.warning("ListAIJob in %s refused %d ids: %s", vod.region, len(batch), exc)
            if len(batch) > 1:  # ask for each alone: one bad id must not cost the others
                batches.extendleft([job_id] for job_id in reversed(batch))
                continue
            report.refused += 1
            errors_in_a_row += 1
            if errors_in_a_row >= MAX_ERRORS:
                return f"{errors_in_a_row} VOD errors in a row: {exc}"
            continue
        errors_in_a_row = 0
        report.checked += len(batch)
        async with database.write() as session:
            await apply_list_result(session, result, clock(), report, region=vod.region)
    return None


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
