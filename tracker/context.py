"""What the app owns, built once in its lifespan: the one typed object its routes read.

A composition root's object, built by tracker/app.py. A wing reads it too (the callback receiver
takes the inbox from it), so at run time it imports only the core; the wings' classes it holds
are named for the type checker alone (the `context` layer in pyproject's [tool.importlinter]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request

from tracker.clock import Clock
from tracker.config import Settings
from tracker.db import Database
from tracker.vod import VodClients

# For mypy only: imported at run time they would make the ingest wing, which reads this context,
# import every other wing.
if TYPE_CHECKING:
    from tracker.api.queries import StatsCache
    from tracker.ingest.inbox import Inbox
    from tracker.ingest.queue import MnsConsumer
    from tracker.ingest.refusals import RefusalLog
    from tracker.notify.relay import Relay
    from tracker.scheduler.service import Scheduler


@dataclass(eq=False)
class AppContext:
    settings: Settings
    clock: Clock
    database: Database
    inbox: Inbox
    stats: StatsCache
    refusals: RefusalLog  # refused callbacks, for the console's inbox page
    vod: VodClients | None = None  # one client per region
    scheduler: Scheduler | None = None
    mns: MnsConsumer | None = None  # with TRACKER_MNS_ENDPOINT and TRACKER_MNS_QUEUE
    relay: Relay | None = None  # unless TRACKER_NOTIFY=off (then `tracker notifier` runs it)


def context_of(owner: Request | Starlette) -> AppContext:
    """The context of a running app (its lifespan has started)."""
    app = owner.app if isinstance(owner, Request) else owner
    context: AppContext = app.state.context
    return context
