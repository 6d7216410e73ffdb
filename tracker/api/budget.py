"""HTTP: the spend guard's figures: today's budget per type (`/stats`, `/metrics`) and a dry run's
answer (`POST /jobs` with `"dry_run": true`). Their bodies are declared here and listed in
tracker/api/schemas/; the ledger is the submit wing's (tracker/submit/budget.py).

Statements: take a session, never commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, NotRequired

from pydantic import Field, WithJsonSchema
from sqlalchemy.ext.asyncio import AsyncSession
from typing_extensions import TypedDict

from tracker.clock import iso
from tracker.metrics import BUDGET_MINUTES_LEFT
from tracker.shapes import Time
from tracker.submit.budget import Budget, day_of, day_rows, minutes
from tracker.submit.estimate import Estimate
from tracker.submit.tally import skip_reason
from tracker.vod import JOB_TYPES

TypeName = Annotated[str, WithJsonSchema({"type": "string", "enum": list(JOB_TYPES)})]


class BudgetDay(TypedDict):
    """One job type's spend today (UTC): minutes of video submitted, not VOD's bill."""

    day: Annotated[str, Field(description="the UTC day, YYYY-MM-DD")]
    minutes_used: Annotated[
        float, Field(description="minutes of video reserved: submitted, or outcome unknown")
    ]
    minutes_limit: Annotated[float | None, Field(description="TRACKER_DAILY_MINUTES; null: none")]
    minutes_left: Annotated[float | None, Field(description="null: no limit")]
    jobs: Annotated[int, Field(description="jobs the minutes were reserved for")]
    exhausted_at: Annotated[
        Time | None, Field(description="when it ran out (the day's budget.exhausted)")
    ]
    estimated_cost: NotRequired[
        Annotated[float, Field(description="minutes_used x TRACKER_PRICE_PER_MINUTE")]
    ]
    currency: NotRequired[Annotated[str, Field(description="TRACKER_CURRENCY")]]


class DryRunJob(TypedDict):
    type: TypeName
    action: Annotated[str, WithJsonSchema({"type": "string", "enum": ["submit", "skip", "refuse"]})]
    reason: Annotated[str | None, Field(description="why it would be skipped or refused")]
    minutes: Annotated[float | None, Field(description="minutes of video; null: not analysed")]
    minutes_left: Annotated[
        float | None, Field(description="left of today's budget before it; null: no limit")
    ]


class DryRun(TypedDict):
    """What `POST /jobs` would submit and spend; nothing was reserved or sent."""

    dry_run: Literal[True]
    media_id: str
    region: str
    duration_s: Annotated[float | None, Field(description="VOD's duration; null: not analysed")]
    jobs: list[DryRunJob]
    minutes: Annotated[float, Field(description="minutes it would reserve, all types together")]
    estimated_cost: NotRequired[
        Annotated[float, Field(description="at TRACKER_PRICE_PER_MINUTE; not VOD's bill")]
    ]
    currency: NotRequired[str]


async def budget_today(
    session: AsyncSession, budget: Budget, now: datetime
) -> dict[str, BudgetDay]:
    """Every job type's figures for `now`'s UTC day (a type nothing was submitted for: zero)."""
    day = day_of(now)
    rows = await day_rows(session, day)
    figures: dict[str, BudgetDay] = {}
    for job_type in JOB_TYPES:
        row = rows.get(job_type)
        used = row.used_ms if row else 0
        limit = budget.limit_ms(job_type)
        figure: BudgetDay = {
            "day": day.isoformat(),
            "minutes_used": minutes(used),
            "minutes_limit": None if limit is None else minutes(limit),
            "minutes_left": None if limit is None else minutes(max(0, limit - used)),
            "jobs": row.jobs if row else 0,
            "exhausted_at": iso(row.exhausted_at) if row else None,
        }
        cost = budget.cost({job_type: used})
        if cost is not None:
            figure["estimated_cost"] = cost
            if budget.currency:
                figure["currency"] = budget.currency
        figures[job_type] = figure
    return figures


def set_budget_gauge(figures: dict[str, BudgetDay]) -> None:
    """`tracker_budget_minutes_left{type}` for each type with a limit (none for the others)."""
    BUDGET_MINUTES_LEFT.clear()
    for job_type, figure in figures.items():
        if figure["minutes_left"] is not None:
            BUDGET_MINUTES_LEFT.labels(job_type).set(figure["minutes_left"])


def dry_run_json(estimate: Estimate, budget: Budget) -> DryRun:
    request = estimate.request
    each = None if request.duration_s is None else minutes(estimate.ms)
    jobs: list[DryRunJob] = []
    for job_type in request.types:
        left = estimate.left_ms.get(job_type)
        job: DryRunJob = {
            "type": job_type,
            "action": "submit",
            "reason": None,
            "minutes": each,
            "minutes_left": None if left is None else minutes(left),
        }
        if job_type in estimate.skipped:
            job |= {"action": "skip", "reason": skip_reason(estimate.skipped[job_type])}
            job["minutes_left"] = None
        elif estimate.over is not None:
            over = estimate.over
            job |= {"action": "refuse", "reason": f"budget_exceeded ({over})"}
        jobs.append(job)
    body: DryRun = {
        "dry_run": True,
        "media_id": request.media_id,
        "region": request.region or "",
        "duration_s": request.duration_s,
        "jobs": jobs,
        "minutes": minutes(estimate.ms * len(estimate.submit)) if estimate.over is None else 0.0,
    }
    cost = budget.cost(dict.fromkeys(estimate.submit, estimate.ms))
    if cost is not None and estimate.over is None:
        body["estimated_cost"] = cost
        if budget.currency:
            body["currency"] = budget.currency
    return body
