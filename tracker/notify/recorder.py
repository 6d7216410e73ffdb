"""Flow: the recorder, which writes what the relay's attempts came to, for every subscription at
once, in one short write transaction every few milliseconds.

The sending half (`send.py`) hands each finished attempt to `put()` and each delivery it gave back
unsent to `give_back()`. The recorder's task takes everything waiting, records it (appends the
attempts, settles the deliveries, judges the subscriptions: `attempts.py`; releases the unsent:
`claims.py`) and commits, while the next results gather behind it, as the inbox groups its
commits. At most RECORD_LIMIT results await their commit (`put()` waits beyond, so the lanes pause
behind a slow database instead of piling results up): that bound, with the requests in flight, is
all a crash can make the receivers get twice (`duplicate_bound`, README's Notifications).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from tracker import metrics
from tracker.clock import Clock
from tracker.db import Database
from tracker.errors import describe
from tracker.notify.attempts import record_attempts
from tracker.notify.claims import Claimed, release
from tracker.notify.deliveries import count_disabled
from tracker.notify.post import AttemptResult
from tracker.notify.send import lane_slots
from tracker.worker import Worker

log = logging.getLogger(__name__)

RECORD_LIMIT = 256  # results sent and not committed yet, per process
# Results gather before a commit while they keep coming: GATHER after the last one, GATHER_MAX
# in all, until a quarter of RECORD_LIMIT waits. A stream of deliveries costs a commit every few
# dozen, not one every few; a lone delivery waits GATHER (recording is off the delivery's path).
GATHER = 0.002
GATHER_MAX = 0.02
STOP_GRACE = 10.0

Finished = tuple[Claimed, AttemptResult]
# Set on the writer connection by a transaction that commits no change: its commit wakes no relay
# (on SQLite the relay writes through the process's one writer, whose commits wake it).
QUIET = "tracker.notify.quiet"


async def quiet(session: AsyncSession) -> None:
    """Mark this write transaction as one that commits no change of the log."""
    (await session.connection()).info[QUIET] = True


OnRecorded = Callable[[Sequence[Finished], Sequence[int]], None]


def duplicate_bound(*, concurrency: int, subscriptions: int, courier: bool) -> int:
    """How many deliveries a receiver can get twice after the relay's process is killed (kill
    -9, a power cut): those sent and not recorded, that is a lane's slots for each subscription
    being sent to (in flight, or answered and waiting for the recorder's room: `lane_slots`),
    and one recorder's worth of results not committed yet. A stop that is not a crash sends
    none twice."""
    return lane_slots(concurrency, courier_on=courier) * subscriptions + RECORD_LIMIT


class Recorder(Worker):
    """The recorder of one relay; `on_recorded(finished, disabled)` after each commit."""

    def __init__(
        self,
        database: Database,
        *,
        clock: Clock,
        schedule: Sequence[timedelta],
        disable_after: timedelta,
        on_recorded: OnRecorded,
    ) -> None:
        super().__init__("recorder", grace=STOP_GRACE)
        self.database = database
        self.clock = clock
        self.schedule = schedule
        self.disable_after = disable_after
        self.on_recorded = on_recorded
        self._finished: list[Finished] = []
        self._unsent: list[Claimed] = []
        self._unrecorded = 0  # results put and not committed (or given up) yet
        self._room = asyncio.Condition()
        self.commits = 0  # for tests and diagnostics

    @property
    def unrecorded(self) -> int:
        return self._unrecorded

    async def put(self, claimed: Claimed, result: AttemptResult) -> None:
        """Queue a result for the next commit; wait while RECORD_LIMIT results await theirs."""
        if self._unrecorded >= RECORD_LIMIT:
            async with self._room:
                await self._room.wait_for(lambda: self._unrecorded < RECORD_LIMIT)
        self._unrecorded += 1
        self._finished.append((claimed, result))
        self.wake()

    def give_back(self, claimed: Claimed) -> None:
        """A claimed delivery that was never sent: pending again with the next commit."""
        self._unsent.append(claimed)
        self.wake()

    async def run(self) -> None:
        while True:
            if not (self._finished or self._unsent):
                if self.stopping:
                    return
                await self.idle(1.0)
                continue
            await self._gather()
            await self.flush()

    async def _gather(self) -> None:
        waited, seen = 0.0, -1
        while len(self._finished) < RECORD_LIMIT // 4 and waited < GATHER_MAX:
            if len(self._finished) == seen:
                return  # none came meanwhile
            seen = len(self._finished)
            await asyncio.sleep(GATHER)
            waited += GATHER

    async def flush(self) -> None:
        """Record everything waiting in one transaction. If it fails the results are lost and
        their deliveries sent again once their leases expire (at least once)."""
        finished, self._finished = self._finished, []
        unsent, self._unsent = self._unsent, []
        now = self.clock()
        recorded = None
        try:
            async with self.database.write() as session:
                await quiet(session)
                recorded = await record_attempts(
                    session,
                    finished,
                    now,
                    schedule=self.schedule,
                    disable_after=self.disable_after,
                )
                await release(session, unsent, now)
                if any(status != "succeeded" for status in recorded.statuses):
                    metrics.SUBSCRIPTIONS_DISABLED.set(await count_disabled(session))
            self.commits += 1
        except Exception as exc:
            log.warning(
                "recorder: %d attempts and %d unsent deliveries not recorded (sent again once "
                "their leases expire): %s",
                len(finished),
                len(unsent),
                describe(exc),
            )
            await asyncio.sleep(0.5)  # the database may be away: do not spin
        finally:
            self._unrecorded -= len(finished)
            async with self._room:
                self._room.notify_all()
        if unsent:
            log.info("relay: %d deliveries given back unsent", len(unsent))
        if recorded is not None:
            for status in recorded.statuses:
                metrics.WEBHOOK_ATTEMPTS.labels(status).inc()
            self.on_recorded(finished, recorded.disabled)
