"""Flows: `tracker events replay`, re-applying stored callbacks that were not applied.

It takes the database and commits chunk by chunk; its statements are in `unapplied.py`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from tracker.clock import Clock
from tracker.db import Database
from tracker.ingest.applier import APPLY_BATCH, apply_pending
from tracker.ingest.unapplied import hand_back, replayable_events, tally_events


async def replay_events(
    database: Database, clock: Clock, *, since: datetime | None, confirm: bool
) -> Counter[str]:
    """Re-apply stored callbacks that were not applied (after a bug fix, say) through the
    webhook's own applier, `tracker.ingest.applier.apply_pending`; return what became of them.

    Callbacks awaiting VOD's confirmation or contradicted by it are left alone: replaying one
    must never apply an outcome VOD denied. So are malformed ones, which the webhook refused.
    """
    async with database.session() as session:
        ids = await replayable_events(session, since=since)
    tally: Counter[str] = Counter()
    for chunk in _chunks(ids, 500):
        async with database.write() as session:
            await hand_back(session, chunk)
        for _ in range(len(chunk) // APPLY_BATCH + 100):  # bounded; others may be queued too
            if await apply_pending(database, clock(), confirm=confirm) < APPLY_BATCH:
                break
        async with database.session() as session:
            tally.update(await tally_events(session, chunk))
    return tally


def _chunks(items: Sequence[int], size: int) -> list[Sequence[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
