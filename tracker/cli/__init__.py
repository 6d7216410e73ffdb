"""The `tracker` command line: one module per command group, gathered here.

A root, like every module of `tracker.cli`: commands parse, run the wings' flows (through
`runner.py` when they need the database) and print; none holds a statement of its own.
"""

from __future__ import annotations

import click

from tracker.cli import db, demo, events, fakevod, jobs, mns, notify, serve, submit, vod


@click.group()
def main() -> None:
    """Track ApsaraVideo VOD AI jobs (smart tagging, fingerprint) from submission to result."""


for command in (
    db.db,
    serve.serve,
    serve.scheduler_command,
    fakevod.fake_vod,
    vod.vod_group,
    mns.mns_group,
    submit.submit,
    jobs.jobs,
    events.events,
    demo.demo,
    notify.subscriptions,
    notify.changes,
    notify.notifier,
):
    main.add_command(command)
