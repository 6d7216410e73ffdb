"""How `tracker submit` shows its progress: plain lines for logs and pipes, a rich progress bar
on a terminal.

A root's view: the submit wing's `Reporter`, drawn; no I/O but the terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tracker.submit.service import TypeOutcome
from tracker.submit.tally import Line, Reporter


class PlainReporter:
    """One line per media outcome: for logs, pipes and CI."""

    def __init__(self, echo: Callable[[str], None], *, dry_run: bool = False) -> None:
        self.echo = echo
        self.dry_run = dry_run

    def started(self, total: int) -> None:
        verb = "planning" if self.dry_run else "submitting"
        self.echo(f"{verb} {total} media")

    def media(self, media_id: str, line: Line) -> None:
        word = "would-submit" if self.dry_run and line.outcome is TypeOutcome.SUBMITTED else None
        types = ",".join(line.types)
        self.echo(f"{word or line.outcome.value} {media_id} {types} {line.detail}".rstrip())

    def advance(self) -> None:
        pass


class ProgressReporter:
    """A rich progress bar on a terminal; only failures and unknowns are printed above it."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def started(self, total: int) -> None:
        self.task = self.progress.add_task("submitting", total=total)

    def media(self, media_id: str, line: Line) -> None:
        if line.outcome in (TypeOutcome.FAILED, TypeOutcome.UNKNOWN):
            self.progress.console.print(
                f"[red]{line.outcome.value}[/] {media_id} {','.join(line.types)} {line.detail}",
                markup=True,
                highlight=False,
            )

    def advance(self) -> None:
        if self.task is not None:
            self.progress.advance(self.task)


@contextmanager
def show(console: Console, *, dry_run: bool) -> Iterator[Reporter]:
    """A progress bar when stdout is a terminal (and this is no dry run), else plain lines."""
    if console.is_terminal and not dry_run:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            yield ProgressReporter(progress)
    else:
        yield PlainReporter(click.echo, dry_run=dry_run)
