"""A job's timeline: everything that happened to it, each with its time, its source and the gap
since the row before, built from the job, its changes, its callbacks and their deliveries.

The change log does not say who made a change; the source is read from what surrounds it (a
callback applied at that moment, the state it came from, VOD's code), as `tracker demo` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tracker.console.format import human_duration
from tracker.models import CONFIRMED, CONTRADICTED, CallbackEvent, Job, JobChange, Submission

NEAR = timedelta(seconds=2)  # a callback applied this close to a change made it
LIMIT = 500  # rows shown at most; a job has a handful (VOD retries thrice, ~8 changes at most)


@dataclass
class Entry:
    at: datetime
    title: str
    source: str
    detail: str = ""
    kind: str = ""  # a state (its colour) or "callback", "delivery", "note"
    gap: str = ""  # since the row before


@dataclass(frozen=True)
class DeliveryRow:
    """A delivery of one of the job's changes, with its last attempt, for the timeline."""

    subscription_id: int
    change_type: str | None
    status: str
    attempts: int
    last_at: datetime | None
    last_code: int | None
    last_error: str | None


def verdict(event: CallbackEvent) -> str:
    """A callback's fate in words."""
    if event.applied is None:
        return "waiting to be applied"
    reason = event.reason or ""
    if reason == CONFIRMED:
        return "applied, confirmed by ListAIJob"
    if reason == CONTRADICTED:
        return "not applied: ListAIJob says otherwise"
    if reason == "pending_confirmation":
        return "held until ListAIJob confirms it (the body is not signed)"
    if event.applied:
        return "applied" if reason in ("", "applied") else f"applied ({reason.replace('_', ' ')})"
    return f"not applied: {reason.replace('_', ' ')}" if reason else "not applied"


def _callback_for(change: JobChange, events: Sequence[CallbackEvent]) -> CallbackEvent | None:
    wanted = {"succeeded": "success", "failed": "fail"}.get(change.state)
    for event in events:
        if not event.applied or event.applied_at is None:
            continue
        if abs(event.applied_at - change.occurred_at) > NEAR:
            continue
        if wanted is None or (event.status or "").lower() == wanted:
            return event
    return None


def _change_entry(change: JobChange, events: Sequence[CallbackEvent], stale_before: bool) -> Entry:
    data: dict[str, Any] = change.data or {}
    previous, state = change.previous_state, change.state
    code, message = data.get("code"), data.get("message")
    callback = _callback_for(change, events)
    by_callback = (
        "VOD callback, confirmed by ListAIJob"
        if callback is not None and callback.reason == CONFIRMED
        else "VOD callback"
    )
    if change.type == "job.stale":
        return Entry(
            change.occurred_at, "flagged stale", "sweep", "no word from VOD in time", "stale"
        )
    if state == "processing":
        if previous in (None, "submitting"):
            title, source = "VOD accepted the job", "submission (SubmitAIJob answer)"
        elif callback is not None:
            title, source = "JobId confirmed", by_callback
        else:
            title, source = "JobId found", "recovery (ListJobInfo / ListAIJob)"
        if previous is None and data.get("origin") == "callback":
            title, source = "first heard of from VOD", by_callback
        return Entry(change.occurred_at, title, source, "", "processing")
    if state == "submit_unknown":
        return Entry(
            change.occurred_at,
            "outcome of SubmitAIJob unknown",
            "submission",
            "the request may have reached VOD; never sent again by itself, looked up by media",
            "submit_unknown",
        )
    if state == "submit_failed":
        source = "recovery gave up" if code == "NoSuchJob" else "submission (VOD refused)"
        detail = ": ".join(str(part) for part in (code, message) if part)
        return Entry(change.occurred_at, "submission failed", source, detail, "submit_failed")
    if state == "lost":
        return Entry(
            change.occurred_at,
            "lost",
            "reconciliation (ListAIJob)",
            "VOD does not know this JobId",
            "lost",
        )
    detail = ": ".join(str(part) for part in (code, message) if part)
    if stale_before:
        detail = (detail + "; " if detail else "") + "was stale: flag cleared"
    source = by_callback if callback is not None else "reconciliation (ListAIJob)"
    return Entry(change.occurred_at, state, source, detail, state)


def build(
    job: Job,
    submission: Submission | None,
    changes: Sequence[JobChange],
    events: Sequence[CallbackEvent],
    deliveries: Sequence[DeliveryRow],
) -> list[Entry]:
    """Every row, oldest first, with the gap from the row before."""
    entries: list[Entry] = []
    if job.origin == "submitted":
        detail = ""
        if submission is not None:
            parts = [f"submission #{submission.id}"]
            if submission.request_id:
                parts.append(f"VOD RequestId {submission.request_id}")
            if submission.code:
                parts.append(f"{submission.code}: {submission.message or ''}".strip())
            detail = "; ".join(parts)
        entries.append(Entry(job.submitted_at, "submitted", "API or CLI", detail, "note"))
    stale = False
    for change in changes[:LIMIT]:
        entries.append(_change_entry(change, events, stale))
        stale = bool((change.data or {}).get("stale"))
    for event in events[:LIMIT]:
        repeats = f"delivered {event.deliveries}×" if event.deliveries > 1 else "delivered once"
        entries.append(
            Entry(
                event.received_at,
                f"callback received: {event.status or event.event_type or '?'}",
                "VOD callback",
                f"{repeats}; {verdict(event)}",
                "callback",
            )
        )
    for delivery in deliveries[:LIMIT]:
        if delivery.last_at is None:
            continue
        outcome = (
            f"HTTP {delivery.last_code}" if delivery.last_code is not None else delivery.last_error
        )
        entries.append(
            Entry(
                delivery.last_at,
                f"{delivery.change_type or 'change'} to subscription {delivery.subscription_id}",
                "webhook relay",
                f"{delivery.status} after {delivery.attempts} attempt(s); last: {outcome or '?'}",
                "delivery",
            )
        )
    entries.sort(key=lambda entry: entry.at)
    previous: datetime | None = None
    for entry in entries:
        if previous is not None:
            entry.gap = "+" + human_duration(entry.at - previous)
        previous = entry.at
    return entries
