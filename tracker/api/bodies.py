"""HTTP: request bodies of the API, JSON only, bounded in size and depth, read before a deadline."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracker.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType

# A submission is a media id, two type names and two small JSON objects (tracker/submit/
# validate.py bounds each at PARAMETER_LIMIT bytes): 64 KiB leaves room and stops floods.
BODY_LIMIT = 64 * 1024
MAX_DEPTH = 32  # nesting of objects and arrays; VOD's Config and UserData use three
# The whole body must arrive within this long after the headers: a client that sends half a
# body and waits must not hold a connection, a task and a buffer for ever.
BODY_SECONDS = 10.0


def parse_json(raw: bytes | str, what: str = "the body") -> Any:
    """Strict JSON: no NaN or Infinity (not JSON, and VOD refuses them), at most MAX_DEPTH deep.

    Raises BadRequest; a forged document never reaches the recursion limit of the parser or of
    anything that walks the result later.
    """
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequest(f"{what}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # also UnicodeDecodeError
        raise BadRequest(f"{what}: not valid JSON: {exc}") from None
    if _depth_exceeds(value, MAX_DEPTH):
        raise BadRequest(f"{what}: nested deeper than {MAX_DEPTH} levels")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest deeper than `limit`; iterative, so any depth is safe."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item  # type: ignore[assignment]
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


async def read_json_object(request: Request, limit: int = BODY_LIMIT) -> dict[str, Any]:
    """The body as a JSON object: `application/json` only (415), at most `limit` bytes (413)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        # Also what keeps a cross-origin HTML form (text/plain, urlencoded, multipart) out: a
        # browser sends application/json across origins only after a CORS preflight we never
        # answer (tracker/api/guards.py).
        raise UnsupportedMediaType("the body must be JSON, sent as Content-Type: application/json")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise PayloadTooLarge(f"the body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes")
        chunks.append(chunk)
    body = parse_json(b"".join(chunks))
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


class BodyDeadline:
    """Fails a request whose body is not complete BODY_SECONDS after its headers (408).

    No timer per request: this runs in front of the callback path, where a timer per request
    (a libuv timer under uvloop, started and closed) cost as much as parsing the body. Reads
    that wait register here, and one sweeper task, running only while some read waits, cancels
    those past their deadline every tenth of BODY_SECONDS; the cancelled read raises
    RequestTimeout. A read that starts past the deadline raises at once. Reads after the body
    is complete (waiting for a disconnect) are never cut.
    """

    def __init__(self, app: ASGIApp, seconds: float = BODY_SECONDS) -> None:
        self.app = app
        self.seconds = seconds
        self._waiting: dict[asyncio.Task[Any], _BodyWatch] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._recent = False  # a read registered since the sweeper's last tick

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        watch = _BodyWatch(self, receive, send, time.monotonic() + self.seconds)
        try:
            await self.app(scope, watch.receive, watch.send)
        except RequestTimeout as exc:  # raised where no exception handler runs (plain ASGI)
            if watch.started:
                raise
            body = json.dumps(exc.to_json()).encode()
            headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
            await send({"type": "http.response.start", "status": 408, "headers": headers})
            await send({"type": "http.response.body", "body": body})

    def _wait(self, task: asyncio.Task[Any], watch: _BodyWatch) -> None:
        self._waiting[task] = watch
        self._recent = True
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Until a tick passes with no read waiting or begun (a task per request would cost
        what the timer did)."""
        try:
            while self._waiting or self._recent:
                self._recent = False
                await asyncio.sleep(self.seconds / 10)
                now = time.monotonic()
                for task, watch in list(self._waiting.items()):
                    if watch.deadline <= now:
                        del self._waiting[task]
                        watch.expired = True
                        task.cancel()
        finally:
            self._sweeper = None


class _BodyWatch:
    """The state of one request's body: its deadline, complete yet, the answer started."""

    __slots__ = ("_guard", "_receive", "_send", "complete", "deadline", "expired", "started")

    def __init__(self, guard: BodyDeadline, receive: Receive, send: Send, deadline: float) -> None:
        self._guard = guard
        self._receive = receive
        self._send = send
        self.deadline = deadline
        self.complete = False
        self.expired = False
        self.started = False

    async def receive(self) -> Message:
        if self.complete:
            return await self._receive()
        guard = self._guard
        if self.expired or time.monotonic() >= self.deadline:
            raise self._timeout()
        task = asyncio.current_task()
        assert task is not None
        guard._wait(task, self)
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if not self.expired:
                raise
            task.uncancel()  # our own cancellation, turned into the 408
            raise self._timeout() from None
        finally:
            guard._waiting.pop(task, None)
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.complete = True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    def _timeout(self) -> RequestTimeout:
        return RequestTimeout(f"the body did not arrive within {self._guard.seconds:g}s")
