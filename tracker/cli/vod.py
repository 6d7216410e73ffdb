"""`tracker vod`: VOD's own configuration, read and written with the configured key pair."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from tracker.cli.startup import settings_or_exit
from tracker.config import Settings
from tracker.errors import ConfigError


@click.group("vod")
def vod_group() -> None:
    """Talk to ApsaraVideo VOD with the configured key pair."""


@vod_group.group("callback")
def vod_callback() -> None:
    """VOD's event notification: where AI completion events are sent."""


def _vod_call(settings: Settings, work: Any) -> Any:
    from tracker.vod import SOURCES_HINT, VodClient, VodError, VodOutcomeUnknown, VodUnreachable

    if not settings.has_vod_credentials:
        raise click.ClickException(f"VOD credentials are needed: set {SOURCES_HINT}")

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
