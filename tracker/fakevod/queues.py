"""Simulator, MNS queue model: queues and messages in memory, visibility, handles, long polls.

Receipt handles are valid once and until the message is visible again (../shared/mns-reference.md
sections 4, 6, 8). `FakeMns` (mns.py) puts MNS's HTTP API in front of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

MAX_BATCH = 16  # messages per batch (8)
MAX_WAIT = 30  # seconds of long polling (4)
MAX_VISIBILITY = 43200  # seconds (8)
DEFAULT_PRIORITY = 8
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,119}$")
HANDLE = re.compile(r"^[A-Za-z0-9-]{1,128}$")
# CreateQueue's attributes: (default, low, high) (8).
ATTRIBUTES = {
    "DelaySeconds": (0, 0, 604800),
    "MaximumMessageSize": (65536, 1024, 65536),
    "MessageRetentionPeriod": (345600, 60, 604800),
    "VisibilityTimeout": (30, 1, MAX_VISIBILITY),
    "PollingWaitSeconds": (0, 0, MAX_WAIT),
}


class MnsRefused(Exception):
    """An error answer in MNS's shape (5.1)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def no_queue() -> MnsRefused:
    return MnsRefused(404, "QueueNotExist", "The queue name you provided is not exist.")


def no_message() -> MnsRefused:
    return MnsRefused(404, "MessageNotExist", "Message not exist.")


@dataclass
class StoredMessage:
    message_id: str
    body: str
    priority: int
    enqueue_ms: int
    visible_at: float  # epoch seconds
    first_dequeue_ms: int = 0
    dequeue_count: int = 0
    handle: str | None = None  # the one receipt handle that is valid now


@dataclass
class FakeQueue:
    name: str
    attributes: dict[str, int]
    logging_enabled: bool = False
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    modified_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    messages: dict[str, StoredMessage] = field(default_factory=dict)  # in send order
    mixed_priority: bool = False  # some message was sent with a priority other than 8
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def visible(self, now: float, count: int) -> list[StoredMessage]:
        """Up to `count` visible messages, highest priority (lowest number) first, then in send
        order. While every message has one priority the scan stops at `count`: a queue of
        20,000 must not cost 20,000 steps per receive."""
        if not self.mixed_priority:
            found = []
            for message in self.messages.values():
                if message.visible_at <= now:
                    found.append(message)
                    if len(found) == count:
                        break
            return found
        ready = [m for m in self.messages.values() if m.visible_at <= now]
        ready.sort(key=lambda m: m.priority)  # stable: send order within a priority
        return ready[:count]

    def counts(self, now: float) -> tuple[int, int, int]:
        """(active, inactive, delayed) messages."""
        active = inactive = delayed = 0
        for message in self.messages.values():
            if message.visible_at <= now:
                active += 1
            elif message.dequeue_count:
                inactive += 1
            else:
                delayed += 1
        return active, inactive, delayed


class QueueStore:
    """Every queue of the simulated MNS, and what was deleted from them (for tests)."""

    def __init__(self, rng: random.Random) -> None:
        self.queues: dict[str, FakeQueue] = {}
        self.deleted = 0
        self.deleted_bodies: list[str] = []  # what was acknowledged, in order
        self.rng = rng  # message ids and receipt handles
        self._ids = itertools.count(1)

    # -- queues --

    def create_queue(self, name: str, **attributes: int) -> FakeQueue:
        if name not in self.queues:
            values = {key: default for key, (default, _, _) in ATTRIBUTES.items()}
            values.update(attributes)
            self.queues[name] = FakeQueue(name, values)
        return self.queues[name]

    def create_or_match(
        self, name: str, attributes: dict[str, int], logging_enabled: bool | None
    ) -> bool:
        """CreateQueue: True if created; creating it again with the same attributes changes
        nothing, with others is QueueAlreadyExist (8)."""
        queue = self.queues.get(name)
        if queue is None:
            self.create_queue(name, **attributes).logging_enabled = bool(logging_enabled)
            return True
        same = all(queue.attributes[k] == v for k, v in attributes.items()) and (
            logging_enabled is None or logging_enabled == queue.logging_enabled
        )
        if not same:
            raise MnsRefused(409, "QueueAlreadyExist", "The queue you want to create exists.")
        return False

    def set_attributes(
        self, name: str, attributes: dict[str, int], logging_enabled: bool | None
    ) -> None:
        """SetQueueAttributes: only what was given changes."""
        queue = self.queue(name)
        queue.attributes.update(attributes)
        if logging_enabled is not None:
            queue.logging_enabled = logging_enabled
        queue.modified_ms = int(time.time() * 1000)

    def queue(self, name: str) -> FakeQueue:
        queue = self.queues.get(name)
        if queue is None:
            raise no_queue()
        return queue

    def delete_queue(self, name: str) -> None:
        self.queues.pop(name, None)

    def depth(self, queue_name: str) -> int:
        """Messages not deleted yet, visible or not."""
        queue = self.queues.get(queue_name)
        return len(queue.messages) if queue else 0

    # -- messages --

    async def put(self, queue_name: str, bodies: Iterable[str]) -> bool:
        """Enqueue as VOD does; False if the queue does not exist (the write fails)."""
        queue = self.queues.get(queue_name)
        if queue is None:
            return False
        for body in bodies:
            self.enqueue(queue, body, 0, DEFAULT_PRIORITY)
        await self.wake(queue)
        return True

    def enqueue(self, queue: FakeQueue, body: str, delay: int, priority: int) -> StoredMessage:
        now = time.time()
        number = next(self._ids)
        message = StoredMessage(
            message_id=f"{self.hex(16)}-{number:x}-{int(now * 1000):X}",
            body=body,
            priority=priority,
            enqueue_ms=int(now * 1000),
            visible_at=now + delay,
        )
        queue.messages[message.message_id] = message
        queue.mixed_priority |= priority != DEFAULT_PRIORITY
        return message

    async def wake(self, queue: FakeQueue) -> None:
        async with queue.changed:
            queue.changed.notify_all()

    async def receive(
        self, queue: FakeQueue, count: int, wait: int, peek: bool, gone: Callable[[], bool]
    ) -> list[StoredMessage]:
        """Up to `count` visible messages, waiting up to `wait` seconds for one (none when
        peeking); each taken is hidden for the queue's VisibilityTimeout under a new handle.
        `gone` says the caller left: nobody is left to hand messages to."""
        deadline = time.monotonic() + (0 if peek else wait)
        while True:
            if gone():
                raise no_message()
            now = time.time()
            taken = queue.visible(now, count)
            if taken:
                if not peek:
                    for message in taken:
                        self._take(queue, message, now)
                return taken
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise no_message()
            hidden = [m.visible_at for m in queue.messages.values()]
            if hidden:  # wake when the first invisible message becomes visible again
                remaining = min(remaining, max(0.001, min(hidden) - now))
            async with queue.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.changed.wait(), remaining)
            if queue.name not in self.queues:
                raise no_queue()

    def _take(self, queue: FakeQueue, message: StoredMessage, now: float) -> None:
        message.dequeue_count += 1
        if not message.first_dequeue_ms:
            message.first_dequeue_ms = int(now * 1000)
        message.visible_at = now + queue.attributes["VisibilityTimeout"]
        message.handle = self._handle_for(message)

    def _handle_for(self, message: StoredMessage) -> str:
        return f"{message.message_id}-{self.hex(8)}"

    def current(self, queue: FakeQueue, handle: str) -> StoredMessage:
        """The message `handle` is valid for: only its latest, before it is visible again."""
        if not HANDLE.match(handle):
            raise MnsRefused(
                400, "ReceiptHandleError", "The receipt handle you provide is not valid."
            )
        message_id = handle.rsplit("-", 1)[0]
        message = queue.messages.get(message_id)
        if message is None or message.handle != handle or message.visible_at <= time.time():
            raise no_message()
        return message

    def remove(self, queue: FakeQueue, message: StoredMessage) -> None:
        del queue.messages[message.message_id]
        self.deleted += 1
        self.deleted_bodies.append(message.body)

    async def change_visibility(self, queue: FakeQueue, handle: str, seconds: int) -> StoredMessage:
        """Visible again in `seconds`, under a new handle: the old one is spent (6)."""
        message = self.current(queue, handle)
        message.visible_at = time.time() + seconds
        message.handle = self._handle_for(message)
        if seconds == 0:
            await self.wake(queue)
        return message

    def hex(self, length: int) -> str:
        return f"{self.rng.getrandbits(length * 4):0{length}X}"


def body_md5(body: str) -> str:
    """MessageBodyMD5: upper-case hex MD5 of the body as stored (4)."""
    return hashlib.md5(body.encode()).hexdigest().upper()
