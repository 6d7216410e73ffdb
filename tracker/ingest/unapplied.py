"""Statements: stored callbacks that were not applied, found, handed back to the applier, tallied.

`tracker events replay` (`replay.py`) runs them, each in a short transaction of its own; they take
its session and never commit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.models import CONTRADICTED, CallbackEvent
from tracker.transitions import Applied


async def replayable_events(session: AsyncSession, *, since: datetime | None) -> list[int]:
    """Ids of the stored callbacks that were not applied and may be applied again, received at
    or after `since` if given. Left out: those awaiting VOD's confirmation or contradicted by
    it (replaying one must never apply an outcome VOD denied) and malformed ones, which the
    webhook refused."""
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
    return list(await session.scalars(select(CallbackEvent.id).where(*where)))


async def hand_back(session: AsyncSession, ids: Sequence[int]) -> None:
    """Make these callbacks the applier's again (`applied IS NULL`), unless one was applied
    meanwhile."""
    await session.execute(
        update(CallbackEvent)
        .where(CallbackEvent.id.in_(ids), CallbackEvent.applied.is_(False))
        .values(applied=None, applied_at=None, reason=None)
        .execution_options(synchronize_session=False)
    )


async def tally_events(session: AsyncSession, ids: Sequence[int]) -> Counter[str]:
    """What became of these callbacks: `applied`, the reason one was not, or `not applied yet`."""
    rows = await session.execute(
        select(CallbackEvent.applied, CallbackEvent.reason).where(CallbackEvent.id.in_(ids))
    )
    tally: Counter[str] = Counter()
    for applied, reason in rows:
        tally["applied" if applied else str(reason or "not applied yet")] += 1
    return tally
