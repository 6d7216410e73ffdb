"""Simulator, faults: what goes wrong, declared once for `FakeVod` and `tracker fake-vod`'s flags.

`FakeVod` reads them live (`fake.faults` may be changed while it runs). Each field with `help` is
a command-line option (`fail_rate` is `--fail-rate`, with its default, bounds and help); the exact
counts at the end are for demos and tests only.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from typing import Any, Literal


@dataclass(frozen=True)
class Bounds:
    """The values a float option accepts: `low` (excluded when `low_open`) to `high`, either
    open. Fields without bounds accept any value of their default's type."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False


RATE = Bounds(0.0, 1.0)


def _option(default: Any, help: str, bounds: Bounds | None = None) -> Any:
    return field(default=default, metadata={"help": help, "bounds": bounds})


def _rate(help: str) -> Any:
    return _option(0.0, help, RATE)


@dataclass(kw_only=True)
class Faults:
    """What the simulated VOD does wrong, and how slowly. Rates are chances from 0 to 1."""

    delay: float = _option(2.0, "Seconds from submit to result")
    fail_rate: float = _rate("Share of jobs that fail")
    drop_rate: float = _rate("Share of events never sent")
    duplicate_rate: float = _rate("Share sent twice")
    late_rate: float = _rate("Share delivered late")
    late_seconds: float = _option(3.0, "How late")
    qps: float | None = _option(
        None, "Answer Throttling.User above this rate", Bounds(0.0, low_open=True)
    )
    slow_rate: float = _rate("Share of API answers held back after the work is done")
    slow_seconds: float = _option(15.0, "How long they are held")
    error_rate: float = _rate(
        "Share of API calls answered InternalError (500) without doing anything"
    )
    reset_rate: float = _rate("Share of API answers cut off midway after the work is done")
    # SubmitAIJob creates the jobs, then the connection closes before any answer: the lost
    # answer that `tracker.scheduler.recover` looks for with ListJobInfo.
    lose_submit_rate: float = _rate(
        "Share of SubmitAIJob calls whose jobs are created but whose answer never comes "
        "(the connection is closed)"
    )
    unsolicited_rate: float = _rate(
        "Chance per SubmitAIJob of an extra AIMediaDNAComplete nobody submitted"
    )
    # The media (tracker/fakevod/media.py): their duration, and how many VOD does not know.
    duration: float | None = _option(
        None,
        "Seconds of video of every media (GetVideoInfo's Duration) "
        "[default: drawn per MediaId, stable, from --seed]",
        Bounds(0.0),
    )
    missing_media_rate: float = _rate(
        "Share of media ids VOD does not know (NonExistVideoIds; InvalidVideo.NotFound on "
        "GetVideoInfo and SubmitAIJob)"
    )
    stuck_rate: float = _rate("Share of jobs that stay processing")
    stuck_seconds: float = _option(600.0, "For how much longer")
    # VOD's delivery policy (vod-reference.md 6.5): 3 attempts 1 s apart, 5 s each.
    callback_attempts: int = _option(3, "Deliveries per event")
    callback_interval: float = _option(1.0, "Seconds between them")
    callback_timeout: float = _option(5.0, "Seconds each delivery waits for an answer")
    # Exact counts for demos: the next N jobs created drop their event / get stuck, the next N
    # SubmitAIJob answers are lost. Each is spent as it fires.
    drop_next: int = 0
    stuck_next: int = 0
    lose_submit_next: int = 0
    # The next N SubmitAIJob calls answer 500 InternalError having created nothing (the other
    # actions, GetVideoInfo first, are answered as usual).
    submit_error_next: int = 0

    def shown(self) -> str:
        """The rates in use, the QPS and a fixed duration, for the startup line:
        `drop_rate=0.2, qps=10.0`."""
        shown = [f.name for f in fields(self) if f.name.endswith("_rate") or f.name == "qps"]
        values = [(name, getattr(self, name)) for name in shown if getattr(self, name)]
        if self.duration is not None:
            values.append(("duration", self.duration))
        return ", ".join(f"{name}={value}" for name, value in values)

    def take(
        self,
        counter: Literal["drop_next", "stuck_next", "lose_submit_next", "submit_error_next"],
    ) -> bool:
        """Spend one of an exact count (`drop_next`...): True if one was left."""
        left = int(getattr(self, counter))
        if left > 0:
            setattr(self, counter, left - 1)
        return left > 0


def options() -> list[Field[Any]]:
    """The fields that are `tracker fake-vod` options, in the order `--help` shows them."""
    return [f for f in fields(Faults) if "help" in f.metadata]
