"""Flows: the MNS consumer, a second door into the inbox for VOD's events; deleted once stored.

Each poller loops: BatchReceiveMessage (16, long poll) -> each body parsed like an HTTP callback
(raw JSON, or base64 JSON, mns-reference.md 7.2) -> `Inbox.record` (the same rows and dedup key as
`POST /callbacks/vod`, so a redelivered message, or the same event by HTTP, is a duplicate) ->
BatchDeleteMessage of exactly the messages whose rows are committed. Nothing is deleted before it
is durable: a message whose row did not commit stays in the queue and comes back after its
visibility timeout. A body that cannot be parsed is stored for inspection and deleted, so it
cannot loop. A poller receives its next batch while earlier ones commit (PIPELINE), and deletes
run beside it. The inbox owns the transactions; the MNS client (`tracker.mns`) is the vendor
adapter this wraps.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from tracker import metrics
from tracker.clock import Clock, iso
from tracker.config import Settings
from tracker.ingest.events import parse_callback
from tracker.ingest.inbox import Inbox
from tracker.mns.client import MAX_BATCH, Message, MnsClient, MnsError, MnsUnavailable
from tracker.mns.signing import CredentialSource, StaticCredentials
from tracker.worker import Worker

log = logging.getLogger(__name__)

State = Literal["starting", "running", "backing_off", "failed", "stopped"]
STATES: tuple[State, ...] = ("starting", "running", "backing_off", "failed", "stopped")
# Errors that retrying soon cannot fix: the queue or the key is wrong (5.2); so is any other
# 401/403/404. Other answers that are not transient (MnsUnavailable) are backed off like it.
FATAL_CODES = frozenset(
    {"QueueNotExist", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
)
BACKOFF = 0.5  # seconds: first pause after a transient failure, doubled each time (with jitter)
BACKOFF_CAP = 10.0  # so a queue back from an outage is polled again within seconds
DELETE_ATTEMPTS = 3
PIPELINE = 3  # batches per poller received and not yet stored


def event_body(text: str) -> tuple[bytes, str]:
    """The callback body a message carries, and how it was encoded ("raw" or "base64").

    VOD's encoding is undocumented (mns-reference.md 7.2, vod-reference.md 6.7): JSON first,
    else base64 of JSON; anything else is handed on raw, to be stored as malformed.
    """
    stripped = text.strip()
    if stripped.startswith("{"):
        return text.encode(), "raw"
    try:
        decoded = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        return text.encode(), "raw"
    if decoded.lstrip().startswith(b"{"):
        return decoded, "base64"
    return text.encode(), "raw"


def inbox_row(message: Message, now: datetime) -> tuple[dict[str, Any], str | None]:
    """The inbox row of one message (as `parse_callback` makes it for HTTP), and why it is
    malformed, if it is. `headers` keeps where it came from, for inspection."""
    raw, encoding = event_body(message.body)
    row, malformed = parse_callback(raw)
    row["received_at"] = now
    row["headers"] = {
        "channel": "mns",
        "message_id": message.message_id[:128],
        "dequeue_count": str(message.dequeue_count),
        "encoding": encoding,
    }
    return row, malformed


class MnsConsumer(Worker):
    """`pollers` concurrent receive loops on one queue, sharing the process's inbox.

    States: starting, running, backing_off (unreachable, throttled, 5xx: retried with jittered
    exponential backoff), failed (queue missing, access denied: logged once, retried every
    `failed_retry` seconds), stopped. Stopping cancels the pollers at once (a receive in flight
    stores nothing); a batch stored but not yet deleted comes back later and is absorbed as a
    duplicate.
    """

    def __init__(
        self,
        client: MnsClient,
        queue: str,
        inbox: Inbox,
        *,
        clock: Clock,
        wait: int = 30,
        pollers: int = 2,
        failed_retry: float = 60.0,
        backoff: float = BACKOFF,
        backoff_cap: float = BACKOFF_CAP,
    ) -> None:
        super().__init__(f"MNS consumer of queue {queue!r}", tasks=pollers, grace=0)
        self.client = client
        self.queue = queue
        self.inbox = inbox
        self.clock = clock
        self.wait = wait
        self.pollers = pollers
        self.failed_retry = failed_retry
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.state: State = "stopped"
        self.since = time.time()
        self.last_error: str | None = None
        self.last_message_at: float | None = None
        self.counts: Counter[str] = Counter()
        self._failures = 0  # consecutive failed receives, all pollers together
        # Deletes run beside the next receive (they only acknowledge what is committed); at most
        # two per poller in flight, so a slow MNS holds the pollers back instead of piling up.
        self._deleting: set[asyncio.Task[None]] = set()
        self._consuming: set[asyncio.Task[None]] = set()  # batches being stored
        self._delete_slots = asyncio.Semaphore(2 * pollers)
        self._set_state("stopped")

    def __repr__(self) -> str:
        return f"MnsConsumer(queue={self.queue!r}, endpoint={self.client.endpoint!r})"

    async def setup(self) -> None:
        self._set_state("starting")

    async def teardown(self) -> None:
        """After the pollers were cancelled: finish the batches they handed on, close."""
        if self._consuming:  # batches received: let their commits finish (the inbox is open)
            await asyncio.wait(self._consuming, timeout=5.0)
        for task in self._consuming:
            task.cancel()
        if self._deleting:  # acknowledge what is committed, briefly; the rest comes back
            await asyncio.wait(self._deleting, timeout=5.0)
        for task in self._deleting:
            task.cancel()
        await self.client.close()
        self._set_state("stopped")

    def status(self) -> dict[str, Any]:
        """What /readyz, /stats and `tracker mns status` show."""
        return {
            "state": self.state,
            "since": _iso(self.since),
            "queue": self.queue,
            "endpoint": self.client.endpoint,
            "last_error": self.last_error,
            "last_message_at": _iso(self.last_message_at),
            "messages": dict(self.counts),
        }

    # -- the loop --

    async def run(self) -> None:
        """Receive, and hand each batch to its own task: the next receive overlaps the commit of
        the previous batches (PIPELINE per poller), so the inbox always has rows waiting."""
        slots = asyncio.Semaphore(PIPELINE)
        while True:
            await slots.acquire()
            try:
                messages = await self.client.receive(self.queue, MAX_BATCH, self.wait)
            except MnsUnavailable as exc:
                slots.release()
                await self._back_off(exc)
                continue
            except MnsError as exc:
                slots.release()
                if exc.mns_code in FATAL_CODES or exc.http_status in (401, 403, 404):
                    await self._fail(exc)
                else:  # an answer we did not expect: not fatal, not worth hammering either
                    await self._back_off(exc)
                continue
            except BaseException:
                slots.release()
                raise
            self._recovered()
            if not messages:
                slots.release()
                continue
            task = asyncio.create_task(self._consume(messages))
            self._consuming.add(task)
            task.add_done_callback(self._consuming.discard)
            task.add_done_callback(lambda _: slots.release())

    async def _consume(self, messages: Sequence[Message]) -> None:
        now = self.clock()
        self.last_message_at = time.time()
        parsed = [inbox_row(message, now) for message in messages]
        results = await asyncio.gather(
            *(self.inbox.record(row) for row, _ in parsed), return_exceptions=True
        )
        stored: list[str] = []
        for message, (_, malformed), result in zip(messages, parsed, results, strict=True):
            if isinstance(result, BaseException):
                outcome = "not_stored"
            else:
                stored.append(message.receipt_handle)
                outcome = "malformed" if malformed else "stored" if result.new else "duplicate"
            if malformed and outcome == "malformed":
                log.warning(
                    "MNS message %s is not a VOD event (%s): stored for inspection, deleted",
                    message.message_id,
                    malformed,
                )
            self._count(outcome)
        if len(stored) < len(messages):
            # The inbox logged why (the database, most likely). The messages stay invisible for
            # the queue's visibility timeout and then come back; pause so a database that is
            # down is not hammered by every poller.
            failed = len(messages) - len(stored)
            self.last_error = f"{failed} events not stored: left in the queue"
            log.warning("MNS: %d of %d events not stored; left in the queue", failed, len(messages))
            await asyncio.sleep(random.uniform(self.backoff, 2 * self.backoff))
        if stored:
            await self._delete_slots.acquire()
            task = asyncio.create_task(self._delete(stored))
            self._deleting.add(task)
            task.add_done_callback(self._deleted)

    def _deleted(self, task: asyncio.Task[None]) -> None:
        self._deleting.discard(task)
        self._delete_slots.release()

    async def _delete(self, handles: list[str]) -> None:
        """Delete after the commit; a failure here only means the messages come back later."""
        for attempt in range(1, DELETE_ATTEMPTS + 1):
            try:
                refused = await self.client.delete(self.queue, handles)
            except MnsError as exc:
                if attempt == DELETE_ATTEMPTS or not isinstance(exc, MnsUnavailable):
                    metrics.MNS_ERRORS.labels(_kind(exc)).inc()
                    log.warning(
                        "MNS: deleting %d stored messages failed (%s); they will be delivered "
                        "again and absorbed as duplicates",
                        len(handles),
                        exc,
                    )
                    return
                await asyncio.sleep(random.uniform(0, self.backoff * attempt))
                continue
            metrics.MNS_DELETED.inc(len(handles) - len(refused))
            self.counts["deleted"] += len(handles) - len(refused)
            for failure in refused:
                # Stored, but its visibility timeout ran out first (6): the message comes back
                # and is absorbed by the inbox's dedup. Worth knowing, not fatal.
                metrics.MNS_EXPIRED_HANDLES.inc()
                self.counts["expired_handles"] += 1
                log.info(
                    "MNS: receipt handle %s no longer valid (%s): the message will be delivered "
                    "again as a duplicate",
                    failure.receipt_handle[:64],
                    failure.code,
                )
            return

    # -- states --

    async def _back_off(self, exc: MnsError) -> None:
        metrics.MNS_ERRORS.labels(_kind(exc)).inc()
        self._failures += 1
        self.last_error = str(exc)
        if self.state != "backing_off":
            log.warning("MNS queue %s: %s; backing off", self.queue, exc)
        self._set_state("backing_off")
        ceiling = min(self.backoff_cap, self.backoff * 2 ** min(self._failures, 16))
        await asyncio.sleep(random.uniform(self.backoff / 2, ceiling))

    async def _fail(self, exc: MnsError) -> None:
        metrics.MNS_ERRORS.labels("failed").inc()
        self.last_error = str(exc)
        if self.state != "failed":  # one clear line, not one per retry
            log.error(
                "MNS consumer failed: queue %r at %s answered %s. Check TRACKER_MNS_QUEUE, "
                "TRACKER_MNS_ENDPOINT and the key's MNS permissions; retrying every %.0fs",
                self.queue,
                self.client.endpoint,
                exc,
                self.failed_retry,
            )
        self._set_state("failed")
        await asyncio.sleep(self.failed_retry)

    def _recovered(self) -> None:
        if self.state in ("backing_off", "failed"):
            log.info("MNS queue %s answers again after %d failures", self.queue, self._failures)
        self._failures = 0
        if self.state != "running":
            self.last_error = None
            self._set_state("running")

    def _set_state(self, state: State) -> None:
        if state != self.state:
            self.since = time.time()
        self.state = state
        for name in STATES:
            metrics.MNS_STATE.labels(name).set(1 if name == state else 0)

    def _count(self, outcome: str) -> None:
        metrics.MNS_MESSAGES.labels(outcome).inc()
        self.counts[outcome] += 1


def consumer_for(
    settings: Settings, inbox: Inbox, clock: Clock, credentials: CredentialSource | None = None
) -> MnsConsumer | None:
    """The consumer `tracker serve` runs when TRACKER_MNS_ENDPOINT and _QUEUE are set, with
    VOD's key pair unless another credential source is given (e.g. a rotating one)."""
    if not (settings.mns_endpoint and settings.mns_queue):
        return None
    client = MnsClient(
        settings.mns_endpoint, credentials or StaticCredentials.from_settings(settings)
    )
    return MnsConsumer(
        client,
        settings.mns_queue,
        inbox,
        clock=clock,
        wait=settings.mns_wait,
        pollers=settings.mns_pollers,
        failed_retry=settings.mns_failed_retry.total_seconds(),
    )


def _kind(exc: MnsError) -> str:
    if exc.http_status is None:
        return "unreachable"
    if exc.mns_code in ("QpsLimitExceeded", "Throttling") or exc.http_status == 429:
        return "throttled"
    if exc.http_status >= 500:
        return "server_error"
    return "client_error"


def _iso(stamp: float | None) -> str | None:
    return None if stamp is None else iso(datetime.fromtimestamp(stamp, UTC))
