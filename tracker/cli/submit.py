"""`tracker submit`: submit media in bulk, resumably, with a live tally.

A root: validates everything first, then runs the submit wing's batch flow (which owns its
transactions and calls VOD outside them) under its own signal handling.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console

from tracker.cli.reporters import show
from tracker.cli.startup import ensure_schema, settings_or_exit
from tracker.clock import utcnow
from tracker.config import Settings
from tracker.db import Database
from tracker.errors import TrackerError
from tracker.submit.batch import Item, check_items, merge_items, read_items, run_batch
from tracker.submit.budget import Budget
from tracker.submit.claims import SubmitRequest
from tracker.submit.estimate import dry_run
from tracker.submit.tally import Tally
from tracker.submit.validate import (
    InvalidSubmission,
    check_media_id,
    parse_json_object,
    parse_types,
)
from tracker.vod import SOURCES_HINT, VodClient


@click.command()
@click.argument("media_ids", nargs=-1)
@click.option("--types", help="AIVideoTag, AIMediaDNA or both, comma-separated")
@click.option("--config", "config_json", help='Config JSON, e.g. {"AIVideoTag":{...}}')
@click.option("--user-data", "user_data_json", help="UserData JSON (Extend, MessageCallback)")
@click.option(
    "--from-file",
    type=click.File("r", encoding="utf-8"),
    help="One MediaId a line, or CSV media_id[,types]; - for stdin",
)
@click.option(
    "--region",
    default=None,
    help="VOD region of these media [default: TRACKER_VOD_REGION]; one region per run",
)
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 512))
@click.option("--force", is_flag=True, help="Resubmit media that have a live or done job")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print what would be submitted and the minutes it would spend (VOD's durations, with "
    "credentials); reserve and submit nothing",
)
def submit(
    media_ids: tuple[str, ...],
    types: str | None,
    config_json: str | None,
    user_data_json: str | None,
    from_file: Any,
    region: str | None,
    concurrency: int,
    force: bool,
    dry_run: bool,
) -> None:
    """Submit smart-tagging/fingerprint jobs for MEDIA_IDS or a file of them (resumable)."""
    settings = settings_or_exit()
    if not dry_run and not settings.has_vod_credentials:
        raise click.ClickException(
            f"VOD credentials are required (or use --dry-run): set {SOURCES_HINT}"
        )
    options = Options(
        media_ids=media_ids,
        types=types,
        config=config_json,
        user_data=user_data_json,
        lines=from_file,
        source=getattr(from_file, "name", "input"),
        region=region or settings.vod_region,
        concurrency=concurrency,
        force=force,
        dry_run=dry_run,
    )
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ensure_schema(settings)
    try:
        code = asyncio.run(submit_command(settings, options, Console()))
    except TrackerError as exc:
        raise click.UsageError(exc.message) from None
    raise SystemExit(code)


@dataclass
class Options:
    media_ids: Sequence[str]
    types: str | None
    config: str | None
    user_data: str | None
    lines: Iterable[str] | None
    source: str
    region: str  # --region, or TRACKER_VOD_REGION
    concurrency: int
    force: bool
    dry_run: bool


def load_items(settings: Settings, options: Options) -> tuple[list[Item], SubmitRequest]:
    """Parse and validate everything before anything is sent; raises InvalidSubmission."""
    default_types = parse_types(options.types) if options.types else None
    items = [Item(check_media_id(m), default_types or ()) for m in options.media_ids]
    if items and default_types is None:
        raise InvalidSubmission("--types is required with media ids on the command line")
    if options.lines is not None:
        items += read_items(options.lines, default_types, source=options.source)
    if not items:
        raise InvalidSubmission("nothing to submit: give media ids or --from-file")
    region = options.region or settings.vod_region
    template = SubmitRequest(
        "",
        (),
        parse_json_object("--config", options.config),
        parse_json_object("--user-data", options.user_data),
        region=region,
    )
    items = merge_items(items)
    check_items(items, region, template.user_data, template.config)
    return items, template


BUDGET_EXIT = 3  # stopped at the daily budget: run it again after the reset


async def submit_command(settings: Settings, options: Options, console: Console) -> int:
    """`tracker submit`: 0 when everything was submitted or skipped, 1 when anything failed or
    is unknown, 3 when the day's budget stopped it (TRACKER_DAILY_MINUTES; the media not
    submitted are submitted by a run after the reset), 130 when interrupted (Ctrl-C: in-flight
    media finish; twice: they are abandoned as submit_unknown)."""
    items, template = load_items(settings, options)
    database = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    assert current is not None
    runner: asyncio.Task[Tally] | None = None
    tally = Tally(total=len(items))
    budget = Budget.of(settings)

    def interrupt() -> None:
        if not stop.is_set():
            stop.set()
            console.print(
                "stopping: finishing the submissions in flight (Ctrl-C again abandons them "
                "as submit_unknown)",
                highlight=False,
            )
        elif runner is not None:
            runner.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt)
    try:
        with show(console, dry_run=options.dry_run) as reporter:
            if options.dry_run and not settings.has_vod_credentials:
                tally = await dry_run(database, items, reporter, force=options.force)
            elif options.dry_run:  # GetVideoInfos is free: the durations make the estimate
                async with VodClient(settings, region=template.region) as vod:
                    tally = await dry_run(
                        database, items, reporter, force=options.force, vod=vod, budget=budget
                    )
            else:
                async with VodClient(settings, region=template.region) as vod:
                    runner = asyncio.create_task(
                        run_batch(
                            database,
                            vod,
                            items,
                            utcnow,
                            reporter,
                            config=template.config,
                            user_data=template.user_data,
                            concurrency=options.concurrency,
                            force=options.force,
                            stop=stop,
                            tally=tally,
                            budget=budget,
                        )
                    )
                    try:
                        await runner
                    except asyncio.CancelledError:
                        if current.cancelling():
                            raise
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await database.dispose()
    for line in tally.lines(dry_run=options.dry_run):
        click.echo(line)
    if tally.interrupted:
        return 130
    if tally.over_budget is not None and not options.dry_run:
        return BUDGET_EXIT
    return 0 if tally.ok else 1
