"""`tracker demo`: the simulator and the tracker together, on this machine."""

from __future__ import annotations

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
def demo(exit_when_done: bool, timeout: float, channel: str) -> None:
    """Run the VOD simulator and the tracker locally and watch a few jobs (no cloud account)."""
    from tracker.demo import run_demo

    raise SystemExit(run_demo(exit_when_done=exit_when_done, timeout=timeout, channel=channel))
