"""Pure, no database: what a batch did, one line per media outcome and the summary.

tracker/cli/reporters.py shows them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from tracker.clock import iso
from tracker.models import Job
from tracker.submit.budget import BudgetExceeded, minutes, video_ms
from tracker.submit.claims import error_fields
from tracker.submit.service import Submitted, TypeOutcome


@dataclass
class Tally:
    """Jobs (media x type) by outcome, and why the unsuccessful ones were not submitted."""

    media: int = 0
    total: int = 0  # media in the input
    jobs: Counter[TypeOutcome] = field(default_factory=Counter)
    reasons: Counter[tuple[TypeOutcome, str]] = field(default_factory=Counter)
    examples: dict[tuple[TypeOutcome, str], list[str]] = field(
        default_factory=lambda: defaultdict(list)
    )
    details: dict[tuple[TypeOutcome, str], str] = field(default_factory=dict)
    interrupted: bool = False
    stopped_by: str | None = None  # an error that stopped the batch early
    # Milliseconds of video per type submitted (or unknown: kept), or planned in a dry run.
    spent_ms: Counter[str] = field(default_factory=Counter)
    media_submitted: int = 0  # media with at least one job submitted (or planned)
    over_budget: BudgetExceeded | None = None  # the refusal that stopped the batch
    left_ms: dict[str, int | None] = field(default_factory=dict)  # a dry run's budget after it
    durations: bool = True  # False: a dry run without VOD credentials looked none up

    def add(self, media_id: str, line: Line) -> None:
        self.jobs[line.outcome] += len(line.types)
        if line.outcome in (TypeOutcome.SUBMITTED, TypeOutcome.UNKNOWN):
            for job_type in line.types:
                self.spent_ms[job_type] += line.ms
        if line.outcome is TypeOutcome.SUBMITTED:
            return
        key = (line.outcome, line.key)
        self.reasons[key] += len(line.types)
        self.details.setdefault(key, line.detail)
        shown = self.examples[key]
        if len(shown) < 3 and media_id not in shown:
            shown.append(media_id)

    @property
    def ok(self) -> bool:
        return not (
            self.jobs[TypeOutcome.FAILED] or self.jobs[TypeOutcome.UNKNOWN] or self.interrupted
        )

    def lines(self, *, dry_run: bool = False) -> list[str]:
        verb = "would submit" if dry_run else "submitted"
        head = (
            f"{self.media} of {self.total} media: {self.jobs[TypeOutcome.SUBMITTED]} jobs {verb}, "
            f"{self.jobs[TypeOutcome.SKIPPED]} skipped, {self.jobs[TypeOutcome.FAILED]} failed, "
            f"{self.jobs[TypeOutcome.UNKNOWN]} unknown"
        )
        out = [head]
        if self.over_budget is not None:
            out.append(self._budget_line(dry_run))
        elif self.stopped_by is not None:
            out.append(
                f"stopped early ({self.stopped_by}): {self.total - self.media} media not "
                "started; run it again once that is fixed"
            )
        elif self.interrupted:
            out.append(f"interrupted: {self.total - self.media} media not started; run it again")
        for key, count in sorted(self.reasons.items(), key=lambda kv: -kv[1]):
            shown = ", ".join(self.examples[key])
            out.append(f"  {key[0].value} {count}: {self.details[key]} (e.g. {shown})")
        if dry_run:
            out.append(self._spend_line())
        return out

    def _budget_line(self, dry_run: bool) -> str:
        """The one line of a batch stopped by the budget (`tracker submit` exits 3)."""
        over = self.over_budget
        assert over is not None
        left = f"{minutes(over.left_ms):g} minutes of {over.job_type} left"
        resets = f"the budget resets at {iso(over.resets_at)}"
        if dry_run:
            return (
                f"the daily budget would stop it after {self.media_submitted} media: {left}, "
                f"the next needs {minutes(over.requested_ms):g}; {resets}"
            )
        return (
            f"stopped at the daily budget: {self.media_submitted} media submitted, {left}, "
            f"{resets}; run it again then to go on ({self.total - self.media} media not started)"
        )

    def _spend_line(self) -> str:
        if not self.durations:
            return "would spend: unknown (no VOD credentials to look the durations up)"
        spend = []
        for job_type, ms in sorted(self.spent_ms.items()):
            text = f"{minutes(ms):g} minutes of {job_type}"
            left = self.left_ms.get(job_type)
            if left is not None:
                text += f" ({minutes(left):g} left today after it)"
            spend.append(text)
        return "would spend: " + (", ".join(spend) or "nothing")


def skip_reason(job: Job) -> str:
    return f"already {job.state}" + (f" ({job.origin})" if job.origin != "submitted" else "")


@dataclass(frozen=True)
class Line:
    """One outcome of one media: `key` groups the summary (skip reason or VOD's code); `ms`
    the video of each of its types, counted when submitted or unknown."""

    outcome: TypeOutcome
    types: list[str]
    key: str
    detail: str
    ms: int = 0


def lines_of(done: Submitted) -> list[Line]:
    jobs = {job.type: job for job in done.jobs}
    by_outcome: dict[TypeOutcome, list[str]] = defaultdict(list)
    for job_type, outcome in done.outcomes.items():
        by_outcome[outcome].append(job_type)
    out = []
    ms = video_ms(done.request.duration_s)
    for outcome, types in by_outcome.items():
        if outcome is TypeOutcome.SUBMITTED:
            ids = " ".join(f"{t}={done.job_ids.get(t)}" for t in types)
            out.append(Line(outcome, types, "", f"{ids} ({minutes(ms):g} min)", ms))
        elif outcome is TypeOutcome.SKIPPED:
            for t in types:
                reason = skip_reason(jobs[t]) if t in jobs else "already submitted"
                out.append(Line(outcome, [t], reason, reason))
        else:
            assert done.error is not None
            code, request_id = error_fields(done.error)
            detail = f"{code}: {done.error.message}"
            if request_id:
                detail += f" [RequestId {request_id}]"
            kept = ms if outcome is TypeOutcome.UNKNOWN else 0  # VOD may have charged
            out.append(Line(outcome, types, code, detail, kept))
    return out


class Reporter(Protocol):
    def started(self, total: int) -> None: ...
    def media(self, media_id: str, line: Line) -> None: ...
    def advance(self) -> None: ...
