"""`tracker serve` and `tracker scheduler`: the long-running processes.

A root: checks the settings and the schema, then runs the app (uvicorn) or the scheduler.
"""

from __future__ import annotations

import asyncio
import gc

import click

from tracker.cli.startup import ensure_schema, settings_or_exit, setup_logging
from tracker.errors import ConfigError
from tracker.notify.relay import check_notify_settings


@click.command()
@click.option(
    "--no-scheduler",
    is_flag=True,
    help="Run the web part alone; run `tracker scheduler` elsewhere [env: TRACKER_SCHEDULER=off]",
)
def serve(no_scheduler: bool) -> None:
    """Run the HTTP service (webhook, status API, dashboard) and, by default, the scheduler."""
    import uvicorn

    from tracker.app import create_app

    settings = settings_or_exit()
    if no_scheduler:
        settings = settings.model_copy(update={"scheduler": "off"})
    try:
        settings.check_exposure()
        if settings.notify == "on":
            check_notify_settings(settings)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    setup_logging(settings)
    ensure_schema(settings)
    app = create_app(settings)
    # What is loaded by now lives as long as the process: keep it out of the collector's full
    # passes, which otherwise pause every request for tens of milliseconds under load.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


@click.command("scheduler")
def scheduler_command() -> None:
    """Run the scheduler alone (stale sweep, reconciliation, retention), without HTTP."""
    from tracker.scheduler.service import run_scheduler

    settings = settings_or_exit()
    setup_logging(settings)
    ensure_schema(settings)
    asyncio.run(run_scheduler(settings))
