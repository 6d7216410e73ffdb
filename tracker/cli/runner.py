"""How a command runs its async work on the database and prints JSON: one way for every command.

A root's machinery: `run_on_database` opens the database for one command and disposes of it
after; the work brings its own transactions (a flow) or reads in one session (`read`). A
failure the user can act on is one line (exit 1), never a traceback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.cli.startup import DATABASE_URL
from tracker.config import Settings
from tracker.db import Database
from tracker.errors import TrackerError, describe

T = TypeVar("T")


def run_on_database(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run `work` on a database opened for it; a TrackerError, or a database that cannot be
    reached or read (no file, no server, no schema), ends the command with one line."""

    async def run() -> T:
        database = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        try:
            return await work(database)
        finally:
            await database.dispose()

    try:
        return asyncio.run(run())
    except TrackerError as exc:
        raise click.ClickException(exc.message) from None
    except BrokenPipeError:  # the reader went away (`| head`): not the database's fault
        raise
    except (SQLAlchemyError, OSError) as exc:
        raise click.ClickException(f"{DATABASE_URL}: database error: {describe(exc)}") from None


def read(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one read session (statements only; nothing is committed)."""

    async def in_session(database: Database) -> T:
        async with database.session() as session:
            return await work(session)

    return run_on_database(settings, in_session)


def print_json(value: Any, *, indent: int | None = 2) -> None:
    """JSON as the API answers it (UTF-8 kept); `indent=None` for one value a line."""
    click.echo(json.dumps(value, indent=indent, ensure_ascii=False))
