"""Pure, no database: what one scheduled run did, as one log line (the base of the runs' reports).

Reconciliation and recovery each count their own outcomes; both also count VOD's errors and may
stop early, and both are logged and kept as their heartbeat's summary in the same form.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass
class RunReport(ABC):
    """Counts of one run; its str() is the run's log line: the summary, then each note, then
    the VOD errors and why the run stopped early, if it did, joined by "; "."""

    errors: int = 0
    stopped: str | None = None

    @abstractmethod
    def summary(self) -> str:
        """The line's first clause: what the run looked at and what became of it."""

    def notes(self) -> list[str]:
        """Clauses for what happened only sometimes; shown in this order when there are any."""
        return []

    def __str__(self) -> str:
        clauses = [self.summary(), *self.notes()]
        if self.errors:
            clauses.append(f"{self.errors} VOD errors")
        if self.stopped:
            clauses.append(f"stopped early: {self.stopped}")
        return "; ".join(clauses)
