"""The `tracker` command line."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from tracker.config import Settings, load_settings
from tracker.db import Database, head_revision, is_sqlite, upgrade
from tracker.errors import ConfigError, TrackerError


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@click.group()
def main() -> None:
    """Track ApsaraVideo VOD AI jobs (smart tagging, fingerprint) from submission to result."""


@main.group()
def db() -> None:
    """Manage the database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create the database or migrate it to the current schema."""
    settings = settings_or_exit()
    upgrade(settings.database_url)
    click.echo(f"database at revision {head_revision()}")


async def _schema_revision(settings: Settings) -> str | None:
    database = Database(settings.database_url)
    try:
        return await database.revision()
    finally:
        await database.dispose()


def ensure_schema(settings: Settings) -> None:
    """Upgrade the embedded SQLite default; refuse an out-of-date PostgreSQL schema."""
    if is_sqlite(settings.database_url):
        upgrade(settings.database_url)
        return
    try:
        revision = asyncio.run(_schema_revision(settings))
    except (OSError, SQLAlchemyError) as exc:
        raise click.ClickException(f"TRACKER_DATABASE_URL: cannot connect: {exc}") from None
    if revision != head_revision():
        raise click.ClickException(
            f"database schema is at {revision or 'nothing'}, this tracker needs {head_revision()}: "
            "run `tracker db upgrade` first"
        )


@main.command()
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
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    setup_logging()
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


# --- VOD simulator (issue 3) ---


RATE = click.FloatRange(0.0, 1.0)


@main.command("fake-vod")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9000, show_default=True, type=int)
@click.option(
    "--access-key-id",
    envvar="ALIBABA_CLOUD_ACCESS_KEY_ID",
    help="Key pair it accepts [env: ALIBABA_CLOUD_ACCESS_KEY_ID]",
)
@click.option(
    "--access-key-secret",
    envvar="ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    help="[env: ALIBABA_CLOUD_ACCESS_KEY_SECRET]",
)
@click.option(
    "--callback-url",
    multiple=True,
    envvar="TRACKER_CALLBACK_URL",
    help="Where events go; repeat to alternate between replicas [env: TRACKER_CALLBACK_URL]",
)
@click.option(
    "--auth-key",
    default=None,
    help="Sign callbacks with this AuthKey [default: first TRACKER_CALLBACK_AUTH_KEY]",
)
@click.option("--delay", default=2.0, show_default=True, help="Seconds from submit to result")
@click.option(
    "--fail-rate", default=0.0, type=RATE, show_default=True, help="Share of jobs that fail"
)
@click.option(
    "--drop-rate", default=0.0, type=RATE, show_default=True, help="Share of events never sent"
)
@click.option(
    "--duplicate-rate", default=0.0, type=RATE, show_default=True, help="Share sent twice"
)
@click.option("--late-rate", default=0.0, type=RATE, show_default=True, help="Share delivered late")
@click.option("--late-seconds", default=3.0, show_default=True, help="How late")
@click.option(
    "--qps",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Answer Throttling.User above this rate",
)
@click.option(
    "--slow-rate",
    default=0.0,
    type=RATE,
    show_default=True,
    help="Share of API answers held back after the work is done",
)
@click.option("--slow-seconds", default=15.0, show_default=True, help="How long they are held")
@click.option(
    "--error-rate",
    default=0.0,
    type=RATE,
    show_default=True,
    help="Share of API calls answered InternalError (500) without doing anything",
)
@click.option(
    "--reset-rate",
    default=0.0,
    type=RATE,
    show_default=True,
    help="Share of API answers cut off midway after the work is done",
)
@click.option(
    "--unsolicited-rate",
    default=0.0,
    type=RATE,
    show_default=True,
    help="Chance per SubmitAIJob of an extra AIMediaDNAComplete nobody submitted",
)
@click.option(
    "--stuck-rate",
    default=0.0,
    type=RATE,
    show_default=True,
    help="Share of jobs that stay processing",
)
@click.option("--stuck-seconds", default=600.0, show_default=True, help="For how much longer")
@click.option("--callback-attempts", default=3, show_default=True, help="Deliveries per event")
@click.option("--callback-interval", default=1.0, show_default=True, help="Seconds between them")
@click.option("--seed", default=None, type=int, help="Same seed, same ids and outcomes")
def fake_vod(
    host: str,
    port: int,
    access_key_id: str | None,
    access_key_secret: str | None,
    callback_url: tuple[str, ...],
    auth_key: str | None,
    **faults: Any,
) -> None:
    """Run the local VOD simulator (signed API, AI jobs, callbacks, fault injection)."""
    from tracker.fakevod import run_fake_vod

    if not access_key_id or not access_key_secret:
        raise click.ClickException(
            "the simulator needs a key pair: set ALIBABA_CLOUD_ACCESS_KEY_ID and "
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET (or --access-key-id/--access-key-secret)"
        )
    if auth_key is None:
        auth_key = os.environ.get("TRACKER_CALLBACK_AUTH_KEY", "")
    # A rotation list signs with its first key, like `tracker vod callback set`.
    auth_key = next((k.strip() for k in auth_key.split(",") if k.strip()), None)
    setup_logging()
    run_fake_vod(
        host,
        port,
        access_key_id=access_key_id,
        access_key_secret=access_key_secret,
        callback_urls=list(callback_url),
        auth_key=auth_key,
        **faults,
    )


# --- VOD event notification set-up (issue 3) ---


@main.group("vod")
def vod_group() -> None:
    """Talk to ApsaraVideo VOD with the configured key pair."""


@vod_group.group("callback")
def vod_callback() -> None:
    """VOD's event notification: where AI completion events are sent."""


def _vod_call(settings: Settings, work: Any) -> Any:
    from tracker.vod import VodClient, VodError, VodOutcomeUnknown, VodUnreachable

    if not settings.has_vod_credentials:
        raise click.ClickException(
            "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET must be set"
        )

    async def run() -> Any:
        async with VodClient(settings) as vod:
            return await work(vod)

    try:
        return asyncio.run(run())
    except (VodError, VodUnreachable, VodOutcomeUnknown) as exc:
        raise click.ClickException(str(exc)) from None


def _echo_checks(checks: list[Any], wanted_label: str) -> None:
    width = max(len(c.field) for c in checks)
    for check in checks:
        mark = "ok  " if check.ok else "DIFF"
        line = f"  {mark}  {check.field:<{width}}  {check.current or '(empty)'}"
        if not check.ok:
            line += f"  ({wanted_label} {check.wanted})"
        click.echo(line)


@vod_callback.command("show")
@click.option("--app-id", default=None, help="VOD application (default: app-1000000)")
def vod_callback_show(app_id: str | None) -> None:
    """Show VOD's callback configuration and whether it matches this tracker (exit 1 if not)."""
    from tracker.vod.callback import check_callback

    settings = settings_or_exit()
    current = _vod_call(settings, lambda vod: vod.get_message_callback(app_id))
    checks = check_callback(current, settings)
    click.echo(
        f"VOD event notification ({current.get('AppId') or app_id or 'default app'}, "
        f"{settings.vod_url}):"
    )
    _echo_checks(checks, "want")
    if all(c.ok for c in checks):
        click.echo("AI completion events reach this tracker, signed with its key.")
        return
    click.echo("Does not match this tracker: run `tracker vod callback set`.")
    raise SystemExit(1)


@vod_callback.command("set")
@click.option("--app-id", default=None, help="VOD application (default: app-1000000)")
@click.option("--yes", is_flag=True, help="Apply without asking")
def vod_callback_set(app_id: str | None, yes: bool) -> None:
    """Aim VOD's AI completion events at TRACKER_CALLBACK_URL, signed with our AuthKey."""
    from tracker.vod.callback import changes, plan_callback

    settings = settings_or_exit()
    current = _vod_call(settings, lambda vod: vod.get_message_callback(app_id))
    try:
        plan = plan_callback(current, settings)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    diff = changes(current, plan, settings)
    if all(c.ok for c in diff):
        click.echo("VOD's event notification already matches this tracker; nothing to change.")
        return
    click.echo("SetMessageCallback will change:")
    _echo_checks(diff, "->")
    if not yes:
        click.confirm("Apply?", abort=True)
    params = {**plan, "AppId": app_id} if app_id else plan
    _vod_call(settings, lambda vod: vod.set_message_callback(**params))
    click.echo("Done: VOD now sends AI completion events to " + plan["CallbackURL"])


# --- submitter (issue 4) ---


@main.command()
@click.argument("media_ids", nargs=-1)
@click.option("--types", help="AIVideoTag, AIMediaDNA or both, comma-separated")
@click.option("--config", "config_json", help='Config JSON, e.g. {"AIVideoTag":{...}}')
@click.option("--user-data", "user_data_json", help="UserData JSON (Extend, MessageCallback)")
@click.option(
    "--from-file",
    type=click.File("r", encoding="utf-8"),
    help="One MediaId a line, or CSV media_id[,types]; - for stdin",
)
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 512))
@click.option("--force", is_flag=True, help="Resubmit media that have a live or done job")
@click.option("--dry-run", is_flag=True, help="Print what would be submitted; call nothing")
def submit(
    media_ids: tuple[str, ...],
    types: str | None,
    config_json: str | None,
    user_data_json: str | None,
    from_file: Any,
    concurrency: int,
    force: bool,
    dry_run: bool,
) -> None:
    """Submit smart-tagging/fingerprint jobs for MEDIA_IDS or a file of them (resumable)."""
    from rich.console import Console

    from tracker.batch import Options, submit_command

    settings = settings_or_exit()
    if not dry_run and not settings.has_vod_credentials:
        raise click.ClickException(
            "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET are required "
            "(or use --dry-run)"
        )
    options = Options(
        media_ids=media_ids,
        types=types,
        config=config_json,
        user_data=user_data_json,
        lines=from_file,
        source=getattr(from_file, "name", "input"),
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


# --- tracker jobs (issue 7): the status API's queries, straight from the database ------------


@main.group()
def jobs() -> None:
    """Look up jobs in the database at TRACKER_DATABASE_URL."""


def _states(values: tuple[str, ...]) -> tuple[str, ...]:
    from tracker.models import JobState
    from tracker.queries import split_csv

    states = split_csv(values)
    known = {state.value for state in JobState}
    for state in states:
        if state not in known:
            raise click.BadParameter(f"{state!r} is not one of {', '.join(sorted(known))}")
    return states


@jobs.command("list")
@click.option("--state", "states", multiple=True, help="Repeat or comma-separate.")
@click.option("--type", "types", multiple=True, help="AIVideoTag, AIMediaDNA, ...")
@click.option("--media-id", help="Only this media's jobs.")
@click.option("--stale", is_flag=True, help="Only jobs flagged stale.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--cursor", help="`next_cursor` of the previous page (same filters).")
@click.option("--json", "as_json", is_flag=True, help="JSON as GET /jobs answers.")
def jobs_list(
    states: tuple[str, ...],
    types: tuple[str, ...],
    media_id: str | None,
    stale: bool,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Jobs, newest first."""
    from tracker import jobsview
    from tracker.queries import JobFilter, split_csv

    job_filter = JobFilter(
        states=_states(states),
        types=split_csv(types),
        media_id=media_id,
        stale=True if stale else None,
    )
    jobsview.list_jobs(settings_or_exit(), job_filter, limit, cursor, as_json=as_json)


@jobs.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="JSON as GET /jobs/{job_id} answers.")
def jobs_show(job_id: str, as_json: bool) -> None:
    """One job and the callbacks received for it."""
    from tracker import jobsview

    jobsview.show_job(settings_or_exit(), job_id, as_json=as_json)


# --- scheduler (issue 6) ---


@main.command("scheduler")
def scheduler_command() -> None:
    """Run the scheduler alone (stale sweep, reconciliation, retention), without HTTP."""
    from tracker.scheduler import run_scheduler

    settings = settings_or_exit()
    setup_logging()
    ensure_schema(settings)
    asyncio.run(run_scheduler(settings))


@main.group()
def events() -> None:
    """Stored VOD callbacks (the inbox)."""


@events.command("replay")
@click.option(
    "--since",
    default=None,
    help="Only callbacks received since then: a duration back from now (90m, 7d) or a time "
    "(2026-01-02T03:04:05Z)",
)
def events_replay(since: str | None) -> None:
    """Re-apply stored callbacks that were not applied, through the webhook's applier."""
    from tracker.clock import utcnow
    from tracker.scheduler import replay_events

    settings = settings_or_exit()
    setup_logging()
    ensure_schema(settings)
    start = parse_since(since, utcnow()) if since else None

    async def replay() -> dict[str, int]:
        database = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        try:
            return dict(
                await replay_events(
                    database, utcnow, since=start, confirm=settings.confirms_callbacks
                )
            )
        finally:
            await database.dispose()

    tally = asyncio.run(replay())
    total = sum(tally.values())
    parts = ", ".join(f"{count} {what}" for what, count in sorted(tally.items()))
    click.echo(f"replayed {total} callbacks" + (f": {parts}" if parts else ""))


def parse_since(value: str, now: datetime) -> datetime:
    """`--since`: a duration back from `now` (`90m`, `7d`) or an ISO 8601 time (UTC if no zone)."""
    from tracker.config import parse_duration

    duration = parse_duration(value)
    if isinstance(duration, timedelta):
        return now - duration
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration (90m, 7d) nor a time", param_hint="--since"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- demo (issue 8) ---


@main.command()
@click.option(
    "--exit-when-done",
    is_flag=True,
    help="Exit once every job reached VOD's final state (0), or on timeout (1), for scripts",
)
@click.option(
    "--timeout",
    default=40.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds to wait for the jobs after the last submission",
)
def demo(exit_when_done: bool, timeout: float) -> None:
    """Run the VOD simulator and the tracker locally and watch a few jobs (no cloud account)."""
    from tracker.demo import run_demo

    raise SystemExit(run_demo(exit_when_done=exit_when_done, timeout=timeout))
