"""The simulator's MNS queue service: the queue API under `/queues/`, on its own port.

Held to ../shared/mns-reference.md section 9, so the official `aliyun-mns-sdk` works against it
unchanged: V2 signatures checked over the raw request target, unprefixed XML with every field the
SDK requires, MNS's error bodies and the lower-case `x-mns-request-id` header, long polling,
visibility timeouts, receipt handles valid once and until the message is visible again.

It imports nothing of the tracker's MNS wing (the core imports no wing): its signature check is
its own reading of the reference, so a mistake shared with the client would not cancel out.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import logging
import random
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import unquote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from aiohttp import web

log = logging.getLogger(__name__)

XMLNS = "http://mns.aliyuncs.com/doc/v1/"
MAX_BATCH = 16  # messages per batch (8)
MAX_WAIT = 30  # seconds of long polling (4)
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,119}$")

SKEW = 900.0  # seconds of clock skew accepted (2.1)
HANDLE = re.compile(r"^[A-Za-z0-9-]{1,128}$")
# CreateQueue's attributes: (default, low, high) (8).
ATTRIBUTES = {
    "DelaySeconds": (0, 0, 604800),
    "MaximumMessageSize": (65536, 1024, 65536),
    "MessageRetentionPeriod": (345600, 60, 604800),
    "VisibilityTimeout": (30, 1, 43200),
    "PollingWaitSeconds": (0, 0, 30),
}


class MnsRefused(Exception):
    """An error answer in MNS's shape (5.1)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


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


class FakeMns:
    """Queues in memory. `outage` makes every API request fail as an unreachable host would (the
    connection is dropped) while VOD's own writes (`put`) still land, as when the tracker loses
    its route to MNS; `error_rate` answers that share of requests with InternalError (500)."""

    def __init__(
        self,
        access_key_id: str,
        access_key_secret: str,
        *,
        seed: int | None = None,
        error_rate: float = 0.0,
    ) -> None:
        self.access_key_id = access_key_id
        self._secret = access_key_secret
        self.queues: dict[str, FakeQueue] = {}
        self.error_rate = error_rate
        self.outage = False
        self.requests = 0
        self.refused: dict[str, int] = {}
        self.deleted = 0
        self.deleted_bodies: list[str] = []  # for tests: what was acknowledged, in order
        self._rng = random.Random(None if seed is None else f"mns-{seed}")
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle --

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(client_max_size=2 * 1024 * 1024)
        app.router.add_route("*", "/queues/{queue}", self._handle)
        app.router.add_route("*", "/queues/{queue}/messages", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound = self._runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
        self.url = f"http://{shown}:{bound[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- in-process use (the simulated VOD writes its events here) --

    def create_queue(self, name: str, **attributes: int) -> FakeQueue:
        if name not in self.queues:
            values = {key: default for key, (default, _, _) in ATTRIBUTES.items()}
            values.update(attributes)
            self.queues[name] = FakeQueue(name, values)
        return self.queues[name]

    async def put(self, queue_name: str, bodies: Iterable[str]) -> bool:
        """Enqueue as VOD does; False if the queue does not exist (the write fails)."""
        queue = self.queues.get(queue_name)
        if queue is None:
            return False
        for body in bodies:
            self._enqueue(queue, body, 0, 8)
        await self._wake(queue)
        return True

    def depth(self, queue_name: str) -> int:
        """Messages not deleted yet, visible or not."""
        queue = self.queues.get(queue_name)
        return len(queue.messages) if queue else 0

    # -- the API --

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        request_id = self._request_id()
        if self.outage:
            return self._drop(request)
        try:
            body = await request.read()
            self._authenticate(request)
            if self.error_rate > 0 and self._rng.random() < self.error_rate:
                raise MnsRefused(500, "InternalError", "Internal error.")
            status, payload, headers = await self._route(request, body)
            if self.outage:  # it began while a long poll was held: that answer is lost too
                return self._drop(request)
        except MnsRefused as refusal:
            self.refused[refusal.code] = self.refused.get(refusal.code, 0) + 1
            status = refusal.status
            payload = _document(
                "Error",
                _elements(
                    Code=refusal.code,
                    Message=refusal.message,
                    RequestId=request_id,
                    HostId=self.url,
                ),
            )
            headers = {}
        except Exception:
            log.exception("fake MNS failed on a request")
            status, headers = 500, {}
            payload = _document(
                "Error",
                _elements(
                    Code="InternalError",
                    Message="Internal error.",
                    RequestId=request_id,
                    HostId=self.url,
                ),
            )
        # The SDK reads this header with a case-sensitive lookup (3).
        headers = {"x-mns-request-id": request_id, "x-mns-version": "2015-06-06", **headers}
        if payload is None:
            return web.Response(status=status, headers=headers)
        return web.Response(
            status=status, body=payload, headers={**headers, "Content-Type": "text/xml"}
        )

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=503)  # never reaches the client: the socket is gone

    def _authenticate(self, request: web.Request) -> None:
        headers = request.headers
        authorization = headers.get("Authorization", "")
        if not authorization:
            raise MnsRefused(400, "MissingAuthorizationHeader", "Authorization header missing.")
        if not authorization.startswith("MNS ") or ":" not in authorization:
            raise MnsRefused(400, "InvalidAuthorizationHeader", "Invalid Authorization header.")
        key_id, signature = authorization[4:].rsplit(":", 1)
        date = headers.get("Date") or headers.get("x-mns-date")
        if not date:
            raise MnsRefused(400, "MissingDateHeader", "Date header missing.")
        try:
            moment = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            raise MnsRefused(400, "InvalidDateHeader", "Date header is invalid.") from None
        if abs(time.time() - moment) > SKEW:
            raise MnsRefused(408, "TimeExpired", "The request time is out of range.")
        if key_id != self.access_key_id:
            raise MnsRefused(403, "InvalidAccessKeyId", "The access key id does not exist.")
        mns_headers = sorted(
            (n.lower(), v) for n, v in headers.items() if n.lower().startswith("x-mns-")
        )
        text = "\n".join(
            [
                request.method,
                headers.get("Content-MD5", ""),
                headers.get("Content-Type", ""),
                headers.get("Date", ""),
                # then the x-mns-* headers, one a line, and the raw target: a receipt handle's
                # + / = stay as sent (2.1, 9.2-9.3)
                "".join(f"{n}:{v}\n" for n, v in mns_headers) + request.raw_path,
            ]
        )
        digest = hmac.new(self._secret.encode(), text.encode(), hashlib.sha1).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), signature):
            raise MnsRefused(
                403,
                "SignatureDoesNotMatch",
                f"The request signature does not match. String to sign: {text!r}",
            )

    async def _route(
        self, request: web.Request, body: bytes
    ) -> tuple[int, bytes | None, dict[str, str]]:
        name = request.match_info["queue"]
        if not QUEUE_NAME.match(name):
            raise MnsRefused(400, "InvalidQueueName", f"The queue name is invalid: {name}")
        query = _query(request.raw_path)
        method = request.method
        if not request.path.endswith("/messages"):
            if method == "PUT":
                return self._put_queue(name, body, query)
            if method == "GET":
                return 200, self._queue_xml(self._queue(name)), {}
            if method == "DELETE":
                self.queues.pop(name, None)
                return 204, None, {}
            raise MnsRefused(405, "InvalidRequestURL", f"{method} is not allowed here.")
        queue = self._queue(name)
        if method == "POST":
            return 201, await self._send(queue, body), {}
        if method == "GET":
            return await self._receive(queue, query, request)
        if method == "DELETE":
            return self._delete(queue, query, body)
        if method == "PUT":
            return 200, await self._change_visibility(queue, query), {}
        raise MnsRefused(405, "InvalidRequestURL", f"{method} is not allowed here.")

    def _queue(self, name: str) -> FakeQueue:
        queue = self.queues.get(name)
        if queue is None:
            raise MnsRefused(404, "QueueNotExist", "The queue name you provided is not exist.")
        return queue

    # -- queues --

    def _put_queue(
        self, name: str, body: bytes, query: dict[str, str]
    ) -> tuple[int, bytes | None, dict[str, str]]:
        given, logging_enabled = _queue_attributes(_root(body, "Queue") if body.strip() else None)
        location = {"Location": f"{self.url}/queues/{name}"}
        queue = self.queues.get(name)
        if query.get("metaoverride", "").lower() == "true":  # SetQueueAttributes
            queue = self._queue(name)
            queue.attributes.update(given)
            if logging_enabled is not None:
                queue.logging_enabled = logging_enabled
            queue.modified_ms = int(time.time() * 1000)
            return 204, None, {}
        if queue is not None:
            same = all(queue.attributes[k] == v for k, v in given.items()) and (
                logging_enabled is None or logging_enabled == queue.logging_enabled
            )
            if not same:
                raise MnsRefused(409, "QueueAlreadyExist", "The queue you want to create exists.")
            return 204, None, location
        queue = self.create_queue(name, **given)
        queue.logging_enabled = bool(logging_enabled)
        return 201, None, location

    def _queue_xml(self, queue: FakeQueue) -> bytes:
        active, inactive, delayed = queue.counts(time.time())
        return _document(
            "Queue",
            _elements(
                QueueName=queue.name,
                CreateTime=queue.created_ms // 1000,
                LastModifyTime=queue.modified_ms // 1000,
                **{k: queue.attributes[k] for k in ATTRIBUTES},
                ActiveMessages=active,
                InactiveMessages=inactive,
                DelayMessages=delayed,
                LoggingEnabled="True" if queue.logging_enabled else "False",
            ),
        )

    # -- messages --

    def _enqueue(self, queue: FakeQueue, body: str, delay: int, priority: int) -> StoredMessage:
        now = time.time()
        number = next(self._ids)
        message = StoredMessage(
            message_id=f"{self._hex(16)}-{number:x}-{int(now * 1000):X}",
            body=body,
            priority=priority,
            enqueue_ms=int(now * 1000),
            visible_at=now + delay,
        )
        queue.messages[message.message_id] = message
        queue.mixed_priority |= priority != 8
        return message

    async def _send(self, queue: FakeQueue, body: bytes) -> bytes:
        root = _root(body)
        single = _local(root.tag) == "Message"
        if not single and _local(root.tag) != "Messages":
            raise MnsRefused(400, "MalformedXML", "The XML you provided was not well-formed.")
        items = [root] if single else [e for e in root if _local(e.tag) == "Message"]
        if not items or len(items) > MAX_BATCH:
            raise MnsRefused(400, "InvalidArgument", f"A batch holds 1 to {MAX_BATCH} messages.")
        sent = []
        for item in items:
            fields = _fields(item)
            text = fields.get("MessageBody", "")
            if not text:
                raise MnsRefused(400, "InvalidArgument", "The message body is empty.")
            if len(text.encode()) > queue.attributes["MaximumMessageSize"]:
                raise MnsRefused(400, "InvalidArgument", "The message body is too large.")
            delay = _bounded(fields, "DelaySeconds", queue.attributes["DelaySeconds"], 0, 604800)
            priority = _bounded(fields, "Priority", 8, 1, 16)
            sent.append(self._enqueue(queue, text, delay, priority))
        await self._wake(queue)
        answers = [_elements(MessageId=m.message_id, MessageBodyMD5=body_md5(m.body)) for m in sent]
        if single:
            return _document("Message", answers[0])
        return _document("Messages", "".join(f"<Message>{a}</Message>" for a in answers))

    async def _wake(self, queue: FakeQueue) -> None:
        async with queue.changed:
            queue.changed.notify_all()

    async def _receive(
        self, queue: FakeQueue, query: dict[str, str], request: web.Request
    ) -> tuple[int, bytes | None, dict[str, str]]:
        peek = query.get("peekonly", "").lower() == "true"
        batch = "numofmessages" in query
        count = _number(query, "numofmessages", 1, 1, MAX_BATCH)
        wait = _number(query, "waitseconds", queue.attributes["PollingWaitSeconds"], 0, MAX_WAIT)
        deadline = time.monotonic() + (0 if peek else wait)
        while True:
            if request.transport is None or request.transport.is_closing():
                # The client went away during its long poll (aiohttp does not cancel handlers):
                # nobody is left to hand messages to.
                raise MnsRefused(404, "MessageNotExist", "Message not exist.")
            now = time.time()
            taken = queue.visible(now, count)
            if taken:
                if not peek:
                    for message in taken:
                        self._take(queue, message, now)
                items = [self._message_xml(m, peek) for m in taken]
                if batch:
                    return 200, _document("Messages", "".join(items)), {}
                return 200, f'<?xml version="1.0" encoding="UTF-8"?>{items[0]}'.encode(), {}
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MnsRefused(404, "MessageNotExist", "Message not exist.")
            hidden = [m.visible_at for m in queue.messages.values()]
            if hidden:  # wake when the first invisible message becomes visible again
                remaining = min(remaining, max(0.001, min(hidden) - now))
            async with queue.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.changed.wait(), remaining)
            if queue.name not in self.queues:
                raise MnsRefused(404, "QueueNotExist", "The queue name you provided is not exist.")

    def _take(self, queue: FakeQueue, message: StoredMessage, now: float) -> None:
        message.dequeue_count += 1
        if not message.first_dequeue_ms:
            message.first_dequeue_ms = int(now * 1000)
        message.visible_at = now + queue.attributes["VisibilityTimeout"]
        message.handle = self._handle_for(message)

    def _handle_for(self, message: StoredMessage) -> str:
        return f"{message.message_id}-{self._hex(8)}"

    def _message_xml(self, message: StoredMessage, peek: bool) -> str:
        fields: dict[str, object] = {"MessageId": message.message_id}
        if not peek:
            fields["ReceiptHandle"] = message.handle
        fields.update(
            MessageBody=message.body,
            MessageBodyMD5=body_md5(message.body),
            EnqueueTime=message.enqueue_ms,
        )
        if not peek:
            fields["NextVisibleTime"] = int(message.visible_at * 1000)
        fields.update(
            FirstDequeueTime=message.first_dequeue_ms or message.enqueue_ms,
            DequeueCount=message.dequeue_count,
            Priority=message.priority,
        )
        return f'<Message xmlns="{XMLNS}">{_elements(**fields)}</Message>'

    def _current(self, queue: FakeQueue, handle: str) -> StoredMessage:
        """The message `handle` is valid for: only its latest, before it is visible again."""
        if not HANDLE.match(handle):
            raise MnsRefused(
                400, "ReceiptHandleError", "The receipt handle you provide is not valid."
            )
        message_id = handle.rsplit("-", 1)[0]
        message = queue.messages.get(message_id)
        if message is None or message.handle != handle or message.visible_at <= time.time():
            raise MnsRefused(404, "MessageNotExist", "Message not exist.")
        return message

    def _delete(
        self, queue: FakeQueue, query: dict[str, str], body: bytes
    ) -> tuple[int, bytes | None, dict[str, str]]:
        if "receipthandle" in query:
            message = self._current(queue, query["receipthandle"])
            self._remove(queue, message)
            return 204, None, {}
        root = _root(body, "ReceiptHandles")
        handles = [e.text or "" for e in root if _local(e.tag) == "ReceiptHandle"]
        if not handles:
            raise MnsRefused(400, "MissingReceiptHandle", "The receipt handle is missing.")
        if len(handles) > MAX_BATCH:
            raise MnsRefused(400, "InvalidArgument", f"At most {MAX_BATCH} receipt handles.")
        errors = []
        for handle in handles:
            try:
                message = self._current(queue, handle)
            except MnsRefused as refusal:
                errors.append(
                    "<Error>"
                    + _elements(
                        ErrorCode=refusal.code, ErrorMessage=refusal.message, ReceiptHandle=handle
                    )
                    + "</Error>"
                )
                continue
            self._remove(queue, message)
        if errors:  # partial failure: 404 with <Errors> (5.3)
            return 404, _document("Errors", "".join(errors)), {}
        return 204, None, {}

    def _remove(self, queue: FakeQueue, message: StoredMessage) -> None:
        del queue.messages[message.message_id]
        self.deleted += 1
        self.deleted_bodies.append(message.body)

    async def _change_visibility(self, queue: FakeQueue, query: dict[str, str]) -> bytes:
        if "receipthandle" not in query:
            raise MnsRefused(400, "MissingReceiptHandle", "The receipt handle is missing.")
        if "visibilitytimeout" not in query:
            raise MnsRefused(400, "MissingVisibilityTimeout", "The visibility timeout is missing.")
        seconds = _number(query, "visibilitytimeout", 0, 0, 43200)
        message = self._current(queue, query["receipthandle"])
        message.visible_at = time.time() + seconds
        message.handle = self._handle_for(message)  # the old handle is spent (6)
        if seconds == 0:
            await self._wake(queue)
        return _document(
            "ChangeVisibility",
            _elements(ReceiptHandle=message.handle, NextVisibleTime=int(message.visible_at * 1000)),
        )

    # -- helpers --

    def _hex(self, length: int) -> str:
        return f"{self._rng.getrandbits(length * 4):0{length}X}"

    def _request_id(self) -> str:
        return self._hex(24)


def _query(raw_path: str) -> dict[str, str]:
    """Query names lower-cased; values unquoted WITHOUT turning `+` into a space (9.2)."""
    _, _, query = raw_path.partition("?")
    pairs = (part.partition("=") for part in query.split("&") if part)
    return {name.lower(): unquote(value) for name, _, value in pairs}


def _number(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise MnsRefused(
            400, "InvalidArgument", f"The value of {name} should between {low} and {high}."
        )
    return int(value)


def _bounded(fields: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    return _number({name: fields[name]} if name in fields else {}, name, default, low, high)


def _queue_attributes(root: ElementTree.Element | None) -> tuple[dict[str, int], bool | None]:
    if root is None:
        return {}, None
    fields = _fields(root)
    given = {}
    for name, (default, low, high) in ATTRIBUTES.items():
        if name in fields:
            given[name] = _bounded(fields, name, default, low, high)
    logging_enabled = fields.get("LoggingEnabled")
    return given, None if logging_enabled is None else logging_enabled.lower() == "true"


def _root(body: bytes, expected: str | None = None) -> ElementTree.Element:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise MnsRefused(400, "MalformedXML", "The XML you provided was not well-formed.") from None
    if expected is not None and _local(root.tag) != expected:
        raise MnsRefused(400, "MalformedXML", f"The root element must be {expected}.")
    return root


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _fields(element: ElementTree.Element) -> dict[str, str]:
    return {_local(child.tag): child.text or "" for child in element}


def _elements(**fields: object) -> str:
    """Unprefixed elements with escaped text: the SDK's minidom fails on `ns0:` prefixes (9.4)."""
    return "".join(f"<{name}>{escape(str(value))}</{name}>" for name, value in fields.items())


def body_md5(body: str) -> str:
    """MessageBodyMD5: upper-case hex MD5 of the body as stored (4)."""
    return hashlib.md5(body.encode()).hexdigest().upper()


def _document(root: str, inner: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><{root} xmlns="{XMLNS}">{inner}</{root}>'.encode()
    )
