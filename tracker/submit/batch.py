"""Flows: `tracker submit` over many media, resumable, concurrent, interruptible, with a summary.

Re-running the same input is the way to resume: what is already live or done is skipped (the
unique index decides, tracker/submit/service.py), so nothing is submitted twice. The media's
durations are read from VOD INFOS_LIMIT at a time before they are queued; the first submission
the day's budget refuses stops the batch (tracker/submit/budget.py), which a run on the next
UTC day resumes.

The functions take the database (and the VOD client) and own their transactions; the statements
they run are in `claims.py`.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from tracker.clock import Clock
from tracker.db import Database
from tracker.errors import TrackerError
from tracker.models import Job
from tracker.submit.budget import UNLIMITED, Budget, BudgetExceeded
from tracker.submit.claims import (
    Answer,
    Claim,
    SubmitRequest,
    blocking_jobs,
    claim_many,
    error_fields,
    record_many,
)
from tracker.submit.durations import DurationUnknown, media_infos, unmeasured, with_duration
from tracker.submit.service import ClaimFailed, Submitted, TypeOutcome, submit_media
from tracker.submit.tally import Line, Reporter, Tally, lines_of
from tracker.submit.validate import (
    InvalidSubmission,
    check_media_id,
    check_region,
    check_sendable,
    check_user_data,
    parse_types,
)
from tracker.vod import INFOS_LIMIT, VodClient, VodError, VodUnreachable

log = logging.getLogger(__name__)
CHUNK = 500  # media looked up per query when planning
SHOWN_ERRORS = 10  # bad input lines listed before giving up
THROTTLE_ROUNDS = 5  # extra tries of a media VOD throttled (it created nothing)
U = TypeVar("U")
R = TypeVar("R")
_TYPE_SEPARATORS = re.compile(r"[,;|+\s]+")


@dataclass(frozen=True)
class Item:
    media_id: str
    types: tuple[str, ...]


def read_items(
    lines: Iterable[str], default_types: tuple[str, ...] | None, *, source: str = "input"
) -> list[Item]:
    """One MediaId a line, or CSV `media_id[,types]`; `#` comments, blank lines and a
    `media_id` header are skipped. Every bad line is a 400-style error, found before any call."""
    items: list[Item] = []
    errors: list[str] = []
    for number, row in enumerate(csv.reader(lines), start=1):
        cells = [cell.strip() for cell in row]
        if not cells or not cells[0] or cells[0].startswith("#"):
            continue
        if number == 1 and cells[0].lower() in ("media_id", "mediaid"):
            continue
        try:
            media_id = check_media_id(cells[0])
            named = [t for t in _TYPE_SEPARATORS.split(" ".join(cells[1:])) if t]
            if named:
                types = parse_types(named)
            elif default_types:
                types = default_types
            else:
                raise InvalidSubmission("no types: give --types or a types column")
        except TrackerError as exc:
            errors.append(f"{source}:{number}: {exc.message}")
            continue
        items.append(Item(media_id, types))
    if errors:
        more = f"\n... and {len(errors) - SHOWN_ERRORS} more" if len(errors) > SHOWN_ERRORS else ""
        raise InvalidSubmission("\n".join(errors[:SHOWN_ERRORS]) + more)
    return merge_items(items)


def merge_items(items: Iterable[Item]) -> list[Item]:
    """One item per media, in first-seen order, with the union of its types."""
    merged: dict[str, dict[str, None]] = {}
    for item in items:
        merged.setdefault(item.media_id, {}).update(dict.fromkeys(item.types))
    return [Item(media_id, tuple(types)) for media_id, types in merged.items()]


def check_items(
    items: Sequence[Item],
    region: object,
    user_data: dict[str, Any] | None,
    config: dict[str, Any] | None = None,
) -> None:
    check_sendable("--config", config)
    check_sendable("--user-data", user_data)
    check_user_data(user_data)
    check_region(sorted({t for item in items for t in item.types}), region)


# --- group commit -------------------------------------------------------------------------------


class Grouped(Generic[U, R]):
    """Runs the units of work of concurrent callers together, one transaction per group.

    Each caller gets its result only after the commit that holds its unit (group commit), so
    nothing is acknowledged early; the database does one commit, and one statement per step,
    per group instead of per media (SQLite has one writer; commits and round trips are what
    cost). A group that fails is retried a unit at a time, so one bad unit (or a deadlock
    between two submitters on PostgreSQL) fails only itself.
    """

    def __init__(
        self,
        database: Database,
        write: Callable[[AsyncSession, list[U]], Awaitable[list[R]]],
        *,
        max_group: int = 128,
    ) -> None:
        self.database = database
        self.write = write
        self.max_group = max_group
        self._pending: list[tuple[U, asyncio.Future[R]]] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, unit: U) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((unit, future))
        self._idle.clear()
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await future

    async def close(self) -> None:
        """Finish what is queued (callers that went away still get their unit written)."""
        if self._task is None:
            return
        if not self._task.done():
            await self._idle.wait()  # cleared by every new unit, set once all are committed
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                group = self._pending[: self.max_group]
                del self._pending[: self.max_group]
                await self._commit(group)
            self._idle.set()

    async def _commit(self, group: list[tuple[U, asyncio.Future[R]]]) -> None:
        try:
            async with self.database.write() as session:
                results = await self.write(session, [unit for unit, _ in group])
        except Exception as exc:
            if len(group) > 1:
                for one in group:
                    await self._commit([one])
            elif not group[0][1].done():
                group[0][1].set_exception(exc)
            return
        for (_, future), result in zip(group, results, strict=True):
            if not future.done():  # else the caller went away; its unit is written regardless
                future.set_result(result)


class GroupedStore:
    """The batch's Store: claims and answers of all workers grouped into few transactions."""

    def __init__(
        self, database: Database, clock: Clock, *, force: bool, budget: Budget = UNLIMITED
    ) -> None:
        async def claim(session: AsyncSession, requests: list[SubmitRequest]) -> list[Claim]:
            now = clock()
            return await claim_many(session, requests, now, force=force, read=False, budget=budget)

        async def record(session: AsyncSession, answers: list[tuple[Claim, Answer]]) -> list[None]:
            await record_many(session, answers, clock())
            return [None] * len(answers)

        self._claims = Grouped(database, claim)
        self._answers = Grouped(database, record)

    async def claim(self, request: SubmitRequest, *, force: bool, read: bool) -> Claim:
        return await self._claims(request)

    async def record(self, claim: Claim, answer: Answer) -> None:
        await self._answers((claim, answer))

    async def close(self) -> None:
        await self._claims.close()
        await self._answers.close()


# --- running ------------------------------------------------------------------------------------


async def plan(
    database: Database, items: Sequence[Item], *, force: bool
) -> AsyncIterator[tuple[Item, dict[str, Job]]]:
    """Each item with the jobs that already block its types, looked up a chunk at a time.

    Only an optimisation (a resumed batch skips without a write); the claim still decides.
    """
    for start in range(0, len(items), CHUNK):
        chunk = items[start : start + CHUNK]
        found: dict[tuple[str, str], Job] = {}
        if not force:
            types = sorted({t for item in chunk for t in item.types})
            async with database.session() as session:
                found = await blocking_jobs(session, [item.media_id for item in chunk], types)
        for item in chunk:
            keys = [(item.media_id, t) for t in item.types]
            yield item, {key[1]: found[key] for key in keys if key in found}


async def run_batch(
    database: Database,
    vod: VodClient,
    items: Sequence[Item],
    clock: Clock,
    reporter: Reporter,
    *,
    config: dict[str, Any] | None = None,
    user_data: dict[str, Any] | None = None,
    concurrency: int = 16,
    force: bool = False,
    stop: asyncio.Event | None = None,
    throttle_pause: float = 1.0,
    tally: Tally | None = None,
    budget: Budget = UNLIMITED,
) -> Tally:
    """Submit every item, `concurrency` at a time (VodClient keeps the shared rate limit).

    When `stop` is set no new media is started and the ones in flight finish and are recorded;
    cancelling the call abandons those in flight as `submit_unknown` (never as lost or retried).
    The first media `budget` refuses sets `stop` and `tally.over_budget`; it is not counted,
    like the media not started. Each media is counted once, when its outcome is recorded (in
    `tally`, if given, which is complete even when the call is cancelled). A media VOD does not
    know, or whose duration a budget needs and VOD lacks, fails before anything is claimed.
    """
    stop = stop or asyncio.Event()
    tally = tally or Tally()
    tally.total = len(items)
    reporter.started(len(items))
    queue: asyncio.Queue[SubmitRequest | None] = asyncio.Queue(maxsize=concurrency * 2)

    def count(done: Submitted) -> None:
        tally.media += 1
        lines = lines_of(done)
        tally.media_submitted += any(line.outcome is TypeOutcome.SUBMITTED for line in lines)
        for line in lines:
            tally.add(done.request.media_id, line)
            reporter.media(done.request.media_id, line)
        reporter.advance()

    def refuse(item: Item, blocked: dict[str, Job], code: str, detail: str) -> None:
        """Failed before a claim (nothing sent); its blocked types still count as skipped."""
        request = SubmitRequest(item.media_id, item.types)
        done = Submitted(request, _skips(blocked), list(blocked.values()))
        lines = lines_of(done)
        wanted = [t for t in item.types if t not in blocked]
        lines.append(Line(TypeOutcome.FAILED, wanted, code, f"{code}: {detail}"))
        tally.media += 1
        for line in lines:
            tally.add(item.media_id, line)
            reporter.media(item.media_id, line)
        reporter.advance()

    async def look_up(waiting: list[tuple[Item, dict[str, Job]]]) -> None:
        """Durations of up to INFOS_LIMIT media in one call, then each is queued or fails."""
        failed: VodError | VodUnreachable | None = None
        try:
            infos = await media_infos(vod, [item.media_id for item, _ in waiting])
        except (VodError, VodUnreachable) as exc:
            failed = exc
        for item, blocked in waiting:
            request = SubmitRequest(item.media_id, item.types, config, user_data, region=vod.region)
            try:
                if failed is not None:
                    request = unmeasured(request, budget, failed)
                elif (info := infos.found.get(item.media_id)) is None:
                    refuse(item, blocked, "media_not_found", f"VOD ({vod.region}) does not know it")
                    continue
                else:
                    request = with_duration(request, info, budget)
            except (VodError, VodUnreachable) as exc:
                refuse(item, blocked, error_fields(exc)[0], f"GetVideoInfo: {exc.message}")
                continue
            except DurationUnknown as exc:
                refuse(item, blocked, exc.code, exc.message)
                continue
            await queue.put(request)

    async def produce() -> None:
        waiting: list[tuple[Item, dict[str, Job]]] = []
        async for item, blocked in plan(database, items, force=force):
            if stop.is_set():
                break
            wanted = tuple(t for t in item.types if t not in blocked)
            if not wanted:  # all skipped: counted here, without a write
                request = SubmitRequest(item.media_id, item.types)
                count(Submitted(request, _skips(blocked), list(blocked.values())))
                continue
            waiting.append((item, blocked))
            if len(waiting) == INFOS_LIMIT:
                await look_up(waiting)
                waiting = []
        if waiting and not stop.is_set():
            await look_up(waiting)
        for _ in range(concurrency):
            await queue.put(None)

    async def work() -> None:
        while not stop.is_set():
            request = await queue.get()
            if request is None:
                return
            try:
                done = await submit_media(
                    database,
                    vod,
                    request,
                    clock,
                    force=force,
                    store=store,
                    check_existing=False,  # `plan` looked, a chunk at a time
                    load_jobs=False,
                    throttle_rounds=THROTTLE_ROUNDS,
                    throttle_pause=throttle_pause,
                    budget=budget,
                    look_up=False,  # `look_up` above asked, INFOS_LIMIT media a call
                )
            except BudgetExceeded as exc:  # nothing claimed or sent: stop; tomorrow resumes
                tally.over_budget = tally.over_budget or exc
                tally.stopped_by = tally.stopped_by or exc.code
                stop.set()
                continue
            except asyncio.CancelledError:
                # submit_media recorded it as submit_unknown; count it once, as that.
                reason = "interrupted while waiting for VOD; the job may exist"
                abandon(request, Line(TypeOutcome.UNKNOWN, [*request.types], "interrupted", reason))
                raise
            except ClaimFailed as exc:  # the database is failing: stop, nothing was sent
                abandon(request, Line(TypeOutcome.FAILED, [*request.types], exc.code, exc.message))
                tally.stopped_by = tally.stopped_by or exc.code
                stop.set()
                continue
            except Exception as exc:  # VOD may have the jobs but we could not record them
                log.exception("submitting %s", request.media_id)
                detail = f"not recorded: {type(exc).__name__}: {exc}"
                abandon(
                    request, Line(TypeOutcome.UNKNOWN, [*request.types], "not_recorded", detail)
                )
                tally.stopped_by = tally.stopped_by or "not_recorded"
                stop.set()
                continue
            count(done)

    def abandon(request: SubmitRequest, line: Line) -> None:
        tally.media += 1
        tally.add(request.media_id, line)
        reporter.media(request.media_id, line)
        reporter.advance()

    store = GroupedStore(database, clock, force=force, budget=budget)
    producer = asyncio.create_task(produce())
    workers = [asyncio.create_task(work()) for _ in range(concurrency)]
    try:
        await asyncio.gather(*workers)
    except asyncio.CancelledError:
        tally.interrupted = True
        for task in workers:
            task.cancel()
        # Each cancelled worker records its in-flight media as submit_unknown before it ends.
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
        await store.close()
        if stop.is_set() and tally.stopped_by is None:
            tally.interrupted = True
    return tally


def _skips(blocked: dict[str, Job]) -> dict[str, TypeOutcome]:
    return dict.fromkeys(blocked, TypeOutcome.SKIPPED)
