"""The courier: a child process that makes the relay's requests.

Sending is most of a delivery's CPU (aiohttp, signing). In the relay's process it shares one
thread with claiming, rendering and recording. With the courier (TRACKER_NOTIFY_COURIER=on; off
by default) the relay's lanes hand their deliveries to a child process through a pipe and get
each one's `AttemptResult` back: what to send and what it came to stay in the relay's process,
the only one that touches the database. It pays where there is a core for it: on two, a fan-out
to 100 subscriptions ran 1.35 to 1.70x as fast, and callbacks beside a busy relay slowed by up
to a quarter (benchmarks/RESULTS.md), hence off by default.

The lanes hand over up to twice a subscription's concurrency, and the child sends at most its
concurrency of them at once, so a slot that frees is taken at once, without a round trip to the
relay. As the lanes did, the child sends a delivery only while its lease outlasts the request
(else: given back, unsent), and after a 410 drops what it holds of that subscription until the
relay says the subscription may be sent to again (`resume`).

The child exits when its input closes: at the relay's stop, after its lanes have drained, and
when the relay's process dies, even by kill -9. What it held then counts in the duplicate bound
(`recorder.duplicate_bound`: a lane's slots are twice its concurrency here). A child that exits
under way fails what it held (an attempt with an error, retried on the schedule), and the next
delivery starts another, at most one start a second.

    python -m tracker.notify.courier TIME_LIMIT_SECONDS CONCURRENCY on|off   (on: private
    addresses allowed)

Frames both ways: a 4-byte big-endian length, then a pickled list of tuples. To the child:
(SEND, key, subscription, url, secrets, webhook id, body, now, lease left) and (RESUME,
subscription); back: (key, SENT, the AttemptResult's fields), (key, GIVEN_BACK) or (key, DROPPED).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import signal
import struct
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiohttp

from tracker.notify.egress import RecentVerdicts
from tracker.notify.post import AttemptResult, send, webhook_session

log = logging.getLogger(__name__)

HEADER = struct.Struct("!I")
SEND, RESUME = 0, 1  # to the child
SENT, GIVEN_BACK, DROPPED = 0, 1, 2  # back from it
Handed = AttemptResult | Literal["given back", "dropped"]
AHEAD = 2  # a lane hands over this many times its concurrency: its next request at hand
RESTART_EVERY = 1.0  # seconds between starts of the child at least
STOP_WAIT = 5.0  # seconds the child gets to exit once its input is closed


def frame(items: list[Any]) -> bytes:
    data = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> list[Any] | None:
    """The next frame's items; None at the end of the input."""
    try:
        size = HEADER.unpack(await reader.readexactly(HEADER.size))[0]
        items: list[Any] = pickle.loads(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        return None
    return items


class Courier:
    """The child, seen from the relay's lanes: `hand` one delivery, get what it came to."""

    def __init__(self, *, time_limit: float, concurrency: int, allow_private: bool) -> None:
        self._args = [f"{time_limit:g}", str(concurrency), "on" if allow_private else "off"]
        self._process: asyncio.subprocess.Process | None = None
        self._reading: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._started = -RESTART_EVERY
        self._keys = itertools.count()
        self._waiting: dict[int, asyncio.Future[Handed]] = {}
        self._outbox: list[tuple[Any, ...]] = []
        self._closing = False

    async def hand(
        self,
        sub: int,
        url: str,
        secrets: Sequence[str],
        msg_id: str,
        body: bytes,
        now: datetime,
        lease_left: timedelta,
    ) -> Handed:
        """Send one delivery through the child: its result, or that it was given back (its
        lease ran short before a slot freed) or dropped (its subscription answered 410)."""
        if self._process is None:
            await self._start()
        key = next(self._keys)
        future: asyncio.Future[Handed] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        at, left = now.timestamp(), lease_left.total_seconds()
        self._post((SEND, key, sub, url, tuple(secrets), msg_id, body, at, left))
        return await future

    def resume(self, sub: int) -> None:
        """The subscription's 410 is recorded: the child may send for it again."""
        if self._process is not None:
            self._post((RESUME, sub))

    async def close(self) -> None:
        """Close the child's input and wait for it to exit (killed after STOP_WAIT). A start
        under way ends first, and the child it started is closed too."""
        async with self._lock:
            self._closing = True
            process, self._process = self._process, None
            if process is not None:
                assert process.stdin is not None
                process.stdin.close()
                try:
                    await asyncio.wait_for(process.wait(), STOP_WAIT)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            if self._reading is not None:
                await self._reading
                self._reading = None
            self._closing = False

    async def _start(self) -> None:
        async with self._lock:
            if self._process is not None:
                return
            await asyncio.sleep(max(0.0, self._started + RESTART_EVERY - time.monotonic()))
            self._started = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                __name__,
                *self._args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            self._process = process
            self._reading = asyncio.create_task(self._read(process))

    def _post(self, message: tuple[Any, ...]) -> None:
        self._outbox.append(message)
        if len(self._outbox) == 1:  # one frame for what this turn of the loop hands over
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        messages, self._outbox = self._outbox, []
        process = self._process
        if messages and process is not None:
            assert process.stdin is not None
            with contextlib.suppress(ConnectionError):  # it exited: `_read` fails what it held
                process.stdin.write(frame(messages))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while (answers := await read_frame(process.stdout)) is not None:
            for key, kind, *fields in answers:
                future = self._waiting.pop(key, None)
                if future is None or future.done():
                    continue
                if kind == SENT:
                    future.set_result(AttemptResult(*fields))
                else:
                    future.set_result("given back" if kind == GIVEN_BACK else "dropped")
        code = await process.wait()
        assert process.stdin is not None
        process.stdin.close()  # it exited: nothing more goes to it (the pipe's end is ours)
        if self._process is process:
            self._process = None
        if not self._closing:
            log.warning("relay: the courier exited (code %s); it is started again", code)
        lost = AttemptResult(None, 0.0, error=f"internal error: the courier exited (code {code})")
        waiting, self._waiting = self._waiting, {}
        self._outbox = [m for m in self._outbox if m[0] != SEND]
        for future in waiting.values():
            if not future.done():
                future.set_result(lost)


# --- the child -----------------------------------------------------------------------------------


class Child:
    """Sends what the relay hands over, at most `concurrency` per subscription at once."""

    def __init__(self, time_limit: float, concurrency: int, allow_private: bool) -> None:
        self.time_limit = time_limit
        self.concurrency = concurrency
        self.allow_private = allow_private
        self.http: aiohttp.ClientSession | None = None  # made in the loop, as aiohttp wants
        self.verdicts = RecentVerdicts()
        self.slots: dict[int, asyncio.Semaphore] = {}
        self.gone: set[int] = set()
        self.answers: list[tuple[Any, ...]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.out: asyncio.WriteTransport | None = None

    def take(self, message: tuple[Any, ...]) -> None:
        if message[0] == RESUME:
            self.gone.discard(message[1])
            return
        _, key, sub, url, secrets, msg_id, body, at, left = message
        sent = self.send(key, sub, url, secrets, msg_id, body, at, left, time.monotonic())
        task = asyncio.create_task(sent)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def send(
        self,
        key: int,
        sub: int,
        url: str,
        secrets: Sequence[str],
        msg_id: str,
        body: bytes,
        at: float,
        lease_left: float,
        arrived: float,
    ) -> None:
        slots = self.slots.get(sub)
        if slots is None:
            slots = self.slots[sub] = asyncio.Semaphore(self.concurrency)
        async with slots:
            waited = time.monotonic() - arrived
            if sub in self.gone:
                return self.answer((key, DROPPED))
            if lease_left - waited < self.time_limit:  # it could outlive its lease: not sent
                return self.answer((key, GIVEN_BACK))
            assert self.http is not None
            try:
                result = await send(
                    self.http,
                    url,
                    secrets,
                    msg_id,
                    body,
                    datetime.fromtimestamp(at + waited, UTC),
                    time_limit=self.time_limit,
                    allow_private=self.allow_private,
                    verdicts=self.verdicts,
                )
            except Exception as exc:  # send() catches what the network does: a bug
                log.exception("courier: %s", msg_id)
                result = AttemptResult(None, 0.0, error=f"internal error: {type(exc).__name__}")
            if result.gone:  # before the next request of this subscription starts
                self.gone.add(sub)
            self.answer((key, SENT, *result.fields()))

    def answer(self, answer: tuple[Any, ...]) -> None:
        self.answers.append(answer)
        if len(self.answers) == 1:
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        assert self.out is not None
        self.out.write(frame(self.answers))
        self.answers.clear()

    async def serve(self) -> None:
        """Until stdin closes: the relay closed its end, or died. What is in flight then is
        its leases' to send again."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
        self.out, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout.buffer)
        self.http = webhook_session(self.allow_private)
        while (messages := await read_frame(reader)) is not None:
            for message in messages:
                self.take(message)
        os._exit(0)


def main() -> None:
    # The relay's process stops this one by closing the pipe, after its lanes have drained:
    # a Ctrl-C or a SIGTERM sent to the whole process group must not cut that short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    child = Child(float(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "on")
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings it where it builds
        asyncio.run(child.serve())
    else:
        uvloop.run(child.serve())


if __name__ == "__main__":
    main()
