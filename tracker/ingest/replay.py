"""`tracker events replay`: re-apply stored callbacks that were not applied.

A flow: takes the database and commits chunk by chunk.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select, update

from tracker.clock import Clock
from tracker.db import Database
from tracker.ingest.applier import APPLY_BATCH, apply_pending
from tracker.models import CONTRADICTED, CallbackEvent
from tracker.transitions import Applied


async def replay_events(
    database: Database, clock: Clock, *, since: datetime | None, confirm: bool
) -> Counter[str]:
    """Re-apply stored callbacks that were not applied (after a bug fix, say) through the
    webhook's own applier, `tracker.ingest.applier.apply_pending`; return what became of them.

    Callbacks awaiting VOD's confirmation or contradicted by it are left alone: replaying one
    must never apply an outcome VOD denied. So are malformed ones, which the webhook refused.
    """
    skip = (Applied.PENDING.value, CONTRADICTED)
    where = [
        CallbackEvent.applied.is_(False),
        or_(
            CallbackEvent.reason.is_(None),
            CallbackEvent.reason.not_in(skip) & CallbackEvent.reason.not_like("malformed:%"),
        ),
    ]
    if since is not None:
        where.append(CallbackEvent.received_at >= since)
    async with database.session() as session:
        ids = list(await session.scalars(select(CallbackEvent.id).where(*where)))
    tally: Counter[str] = Counter()
    for chunk in _chunks(ids, 500):
        async with database.write() as session:
            await session.execute(
                update(CallbackEvent)
                .where(CallbackEvent.id.in_(chunk), CallbackEvent.applied.is_(False))
                .values(applied=None, applied_at=None, reason=None)
                .execution_options(synchronize_session=False)
            )
        for _ in range(len(chunk) // APPLY_BATCH + 100):  # bounded; others may be queued too
            if await apply_pending(database, clock(), confirm=confirm) < APPLY_BATCH:
                break
        async with database.session() as session:
            rows = await session.execute(
                select(CallbackEvent.applied, CallbackEvent.reason).where(
                    CallbackEvent.id.in_(chunk)
                )
            )
            for applied, reason in rows:
                tally["applied" if applied else str(reason or "not applied yet")] += 1
    return tally


def _chunks(items: Sequence[int], size: int) -> list[Sequence[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
