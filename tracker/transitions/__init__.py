"""The one state machine: every change of a job's state goes through `transition`.

`machine` holds the rules and the one-outcome functions; `bulk` applies many outcomes at once
with the same guards, set-based.
"""

from tracker.transitions.bulk import apply_outcomes, finish_many, mark_many, mark_pending_many
from tracker.transitions.machine import (
    ALLOWED,
    CREATE_SKEW,
    Applied,
    Outcome,
    adopt_job_id,
    apply_outcome,
    give_up_submit,
    mark_pending,
    sources_of,
    transition,
    waiting_for_job_id,
)

__all__ = [
    "ALLOWED",
    "CREATE_SKEW",
    "Applied",
    "Outcome",
    "adopt_job_id",
    "apply_outcome",
    "apply_outcomes",
    "finish_many",
    "give_up_submit",
    "mark_many",
    "mark_pending",
    "mark_pending_many",
    "sources_of",
    "transition",
    "waiting_for_job_id",
]
