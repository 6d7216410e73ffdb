"""`tracker demo`: the simulator and the tracker together, on this machine.

A root: the command parses its options and hands over to `run.py`, imported only when it runs.
"""

from __future__ import annotations

from datetime import timedelta

import click


@click.command()
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
@click.option(
    "--channel",
    type=click.Choice(["http", "mns"]),
    default="http",
    show_default=True,
    help="How VOD's events reach the tracker: HTTP callbacks, or a (simulated) MNS queue",
)
@click.option(
    "--sts-ttl",
    default=None,
    help="Sign with the simulator's rotating STS credentials (ALIBABA_CLOUD_CREDENTIALS_URI), "
    "each living this long, e.g. 5s",
)
def demo(exit_when_done: bool, timeout: float, channel: str, sts_ttl: str | None) -> None:
    """Run the VOD simulator and the tracker locally and watch a few jobs (no cloud account)."""
    from tracker.cli.demo.run import run_demo
    from tracker.config import parse_duration

    ttl = None
    if sts_ttl is not None:
        parsed = parse_duration(sts_ttl)
        if not isinstance(parsed, timedelta) or parsed.total_seconds() < 2:
            raise click.BadParameter("a duration of at least 2s, e.g. 5s", param_hint="--sts-ttl")
        ttl = parsed.total_seconds()
    raise SystemExit(
        run_demo(exit_when_done=exit_when_done, timeout=timeout, channel=channel, sts_ttl=ttl)
    )
