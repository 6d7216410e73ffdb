"""Simulator, MNS HTTP API: MNS's queue API under `/queues/`, on a port of its own, over `queues`.

Held to ../shared/mns-reference.md section 9, so the official `aliyun-mns-sdk` works against it
unchanged: V2 signatures checked over the raw request target, unprefixed XML with every field the
SDK requires, MNS's error bodies and the lower-case `x-mns-request-id` header.

It imports nothing of the tracker's MNS adapter: its signature check is its own reading of the
reference, so a mistake shared with the client would not cancel out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Iterable
from email.utils import parsedate_to_datetime
from urllib.parse import unquote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from aiohttp import web

from tracker.fakevod.listen import listen
from tracker.fakevod.queues import (
    ATTRIBUTES,
    MAX_BATCH,
    MAX_VISIBILITY,
    MAX_WAIT,
    QUEUE_NAME,
    FakeQueue,
    MnsRefused,
    QueueStore,
    StoredMessage,
    body_md5,
)

log = logging.getLogger(__name__)

XMLNS = "http://mns.aliyuncs.com/doc/v1/"
SKEW = 900.0  # seconds of clock skew accepted (2.1)


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
        self.error_rate = error_rate
        self.outage = False
        self.requests = 0
        self.refused: dict[str, int] = {}
        self._rng = random.Random(None if seed is None else f"mns-{seed}")
        self.store = QueueStore(self._rng)
        self.queues: dict[str, FakeQueue] = self.store.queues  # the same dict, for tests
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle --

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(client_max_size=2 * 1024 * 1024)
        app.router.add_route("*", "/queues/{queue}", self._handle)
        app.router.add_route("*", "/queues/{queue}/messages", self._handle)
        self._runner, self.url = await listen(app, host, port)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- in-process use (the simulated VOD writes its events here) --

    def create_queue(self, name: str, **attributes: int) -> FakeQueue:
        return self.store.create_queue(name, **attributes)

    async def put(self, queue_name: str, bodies: Iterable[str]) -> bool:
        """Enqueue as VOD does; False if the queue does not exist (the write fails)."""
        return await self.store.put(queue_name, bodies)

    def depth(self, queue_name: str) -> int:
        """Messages not deleted yet, visible or not."""
        return self.store.depth(queue_name)

    @property
    def deleted(self) -> int:
        return self.store.deleted

    @property
    def deleted_bodies(self) -> list[str]:
        """What was acknowledged, in order."""
        return self.store.deleted_bodies

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
            status, headers = refusal.status, {}
            payload = self._error(refusal.code, refusal.message, request_id)
        except Exception:
            log.exception("fake MNS failed on a request")
            status, headers = 500, {}
            payload = self._error("InternalError", "Internal error.", request_id)
        # The SDK reads this header with a case-sensitive lookup (3).
        headers = {"x-mns-request-id": request_id, "x-mns-version": "2015-06-06", **headers}
        if payload is None:
            return web.Response(status=status, headers=headers)
        return web.Response(
            status=status, body=payload, headers={**headers, "Content-Type": "text/xml"}
        )

    def _error(self, code: str, message: str, request_id: str) -> bytes:
        """MNS's error body (5.1)."""
        fields = _elements(Code=code, Message=message, RequestId=request_id, HostId=self.url)
        return _document("Error", fields)

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
                return 200, self._queue_xml(self.store.queue(name)), {}
            if method == "DELETE":
                self.store.delete_queue(name)
                return 204, None, {}
            raise MnsRefused(405, "InvalidRequestURL", f"{method} is not allowed here.")
        queue = self.store.queue(name)
        if method == "POST":
            return 201, await self._send(queue, body), {}
        if method == "GET":
            return await self._receive(queue, query, request)
        if method == "DELETE":
            return self._delete(queue, query, body)
        if method == "PUT":
            return 200, await self._change_visibility(queue, query), {}
        raise MnsRefused(405, "InvalidRequestURL", f"{method} is not allowed here.")

    # -- queues --

    def _put_queue(
        self, name: str, body: bytes, query: dict[str, str]
    ) -> tuple[int, bytes | None, dict[str, str]]:
        given, logging_enabled = _queue_attributes(_root(body, "Queue") if body.strip() else None)
        if query.get("metaoverride", "").lower() == "true":  # SetQueueAttributes
            self.store.set_attributes(name, given, logging_enabled)
            return 204, None, {}
        created = self.store.create_or_match(name, given, logging_enabled)
        return 201 if created else 204, None, {"Location": f"{self.url}/queues/{name}"}

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
            sent.append(self.store.enqueue(queue, text, delay, priority))
        await self.store.wake(queue)
        answers = [_elements(MessageId=m.message_id, MessageBodyMD5=body_md5(m.body)) for m in sent]
        if single:
            return _document("Message", answers[0])
        return _document("Messages", "".join(f"<Message>{a}</Message>" for a in answers))

    async def _receive(
        self, queue: FakeQueue, query: dict[str, str], request: web.Request
    ) -> tuple[int, bytes | None, dict[str, str]]:
        peek = query.get("peekonly", "").lower() == "true"
        batch = "numofmessages" in query
        count = _number(query, "numofmessages", 1, 1, MAX_BATCH)
        wait = _number(query, "waitseconds", queue.attributes["PollingWaitSeconds"], 0, MAX_WAIT)

        def gone() -> bool:
            # The client went away during its long poll (aiohttp does not cancel handlers).
            return request.transport is None or request.transport.is_closing()

        taken = await self.store.receive(queue, count, wait, peek, gone)
        items = [self._message_xml(m, peek) for m in taken]
        if batch:
            return 200, _document("Messages", "".join(items)), {}
        return 200, f'<?xml version="1.0" encoding="UTF-8"?>{items[0]}'.encode(), {}

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

    def _delete(
        self, queue: FakeQueue, query: dict[str, str], body: bytes
    ) -> tuple[int, bytes | None, dict[str, str]]:
        if "receipthandle" in query:
            message = self.store.current(queue, query["receipthandle"])
            self.store.remove(queue, message)
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
                message = self.store.current(queue, handle)
            except MnsRefused as refusal:
                errors.append(
                    "<Error>"
                    + _elements(
                        ErrorCode=refusal.code, ErrorMessage=refusal.message, ReceiptHandle=handle
                    )
                    + "</Error>"
                )
                continue
            self.store.remove(queue, message)
        if errors:  # partial failure: 404 with <Errors> (5.3)
            return 404, _document("Errors", "".join(errors)), {}
        return 204, None, {}

    async def _change_visibility(self, queue: FakeQueue, query: dict[str, str]) -> bytes:
        if "receipthandle" not in query:
            raise MnsRefused(400, "MissingReceiptHandle", "The receipt handle is missing.")
        if "visibilitytimeout" not in query:
            raise MnsRefused(400, "MissingVisibilityTimeout", "The visibility timeout is missing.")
        seconds = _number(query, "visibilitytimeout", 0, 0, MAX_VISIBILITY)
        message = await self.store.change_visibility(queue, query["receipthandle"], seconds)
        return _document(
            "ChangeVisibility",
            _elements(ReceiptHandle=message.handle, NextVisibleTime=int(message.visible_at * 1000)),
        )

    # -- helpers --

    def _request_id(self) -> str:
        return self.store.hex(24)


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


def _document(root: str, inner: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><{root} xmlns="{XMLNS}">{inner}</{root}>'.encode()
    )
