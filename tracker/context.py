"""What the app owns, built once in its lifespan: the one typed object its routes read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request

from tracker.clock import Clock
from tracker.config import Settings
from tracker.db import Database
from tracker.vod import VodClients

if TYPE_CHECKING:  # the wings' types, named for the checker only: the core imports no wing
    from tracker.api.queries import StatsCache
    from tracker.ingest.inbox import Inbox
    from tracker.ingest.queue import MnsConsumer
    from tracker.scheduler.service import Scheduler


@dataclass(eq=False)
class AppContext:
    settings: Settings
    clock: Clock
    database: Database
    inbox: Inbox
    stats: StatsCache
    vod: VodClients | None = None  # one client per region
    scheduler: Scheduler | None = None
    mns: MnsConsumer | None = None  # with TRACKER_MNS_ENDPOINT and TRACKER_MNS_QUEUE
    extras: dict[str, object] = field(default_factory=dict)


def context_of(owner: Request | Starlette) -> AppContext:
    """The context of a running app (its lifespan has started)."""
    app = owner.app if isinstance(owner, Request) else owner
    context: AppContext = app.state.context
    return context
