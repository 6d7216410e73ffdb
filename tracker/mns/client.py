"""An MNS queue client on aiohttp: receive, delete, send, queue attributes (mns-reference.md).

Written to the reference rather than wrapping the official SDK, whose blocking `http.client`
would stall the event loop for a whole long poll. Every request is signed with the V2 scheme
(tracker/mns/signing.py) over the path and query exactly as they go on the wire. No database
here; the consumer that stores what it receives is `tracker.ingest.queue`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import aiohttp
from yarl import URL

from tracker.closing import Closing, HttpSession
from tracker.errors import TrackerError, unreadable_answer
from tracker.mns.signing import API_VERSION, CredentialSource, authorization, sign, string_to_sign

XMLNS = "http://mns.aliyuncs.com/doc/v1/"
MAX_BATCH = 16  # messages per batch receive, send or delete (8)
MAX_WAIT = 30  # seconds a long poll may last (4)
CONTENT_TYPE = "text/xml;charset=UTF-8"
# Names as MNS allows them (8); checked before they go into a path.
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,119}$")
# Codes that mean "try again later", whatever the status (5.2; QpsLimitExceeded's status is [U]).
TRANSIENT_CODES = frozenset(
    {"QpsLimitExceeded", "Throttling", "InternalError", "InternalServerError"}
)


class MnsError(TrackerError):
    """MNS answered with an error; `mns_code` is its Code (5.1)."""

    status_code = 502
    code = "mns_error"

    def __init__(
        self, message: str, *, mns_code: str, http_status: int | None, request_id: str | None
    ) -> None:
        super().__init__(message, mns_code=mns_code, http_status=http_status)
        self.mns_code = mns_code
        self.http_status = http_status
        self.request_id = request_id

    def __str__(self) -> str:
        status = f"HTTP {self.http_status}" if self.http_status else "no answer"
        return f"{self.mns_code} ({status}): {self.message}"


class MnsUnavailable(MnsError):
    """Unreachable, throttled or a server error: worth retrying after a pause."""

    status_code = 503
    code = "mns_unavailable"


@dataclass(frozen=True, slots=True)
class Message:
    """A received message (6); times are epoch milliseconds, `body` the text as stored."""

    message_id: str
    receipt_handle: str
    body: str
    body_md5: str
    enqueue_time: int
    first_dequeue_time: int
    next_visible_time: int
    dequeue_count: int
    priority: int


@dataclass(frozen=True, slots=True)
class DeleteFailure:
    """One receipt handle a batch delete refused, e.g. expired (MessageNotExist)."""

    receipt_handle: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class QueueAttributes:
    name: str
    active: int  # visible, waiting to be received
    inactive: int  # received, not deleted yet, invisible until their visibility timeout
    delayed: int
    visibility_timeout: int
    polling_wait_seconds: int
    maximum_message_size: int
    message_retention_period: int


def check_queue_name(name: str) -> str:
    if not QUEUE_NAME.match(name):
        raise ValueError(f"not an MNS queue name: {name!r} (letters, digits and -, at most 120)")
    return name


class MnsClient(Closing):
    """One aiohttp session against one MNS endpoint; the key is asked of `credentials` per
    request, so a rotating source takes effect at once."""

    def __init__(
        self,
        endpoint: str,
        credentials: CredentialSource,
        *,
        connect_timeout: float = 5.0,
        timeout: float = 10.0,
    ) -> None:
        endpoint = endpoint.rstrip("/")
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"MNS endpoint must start with http:// or https://: {endpoint!r}")
        self.endpoint = endpoint
        self.credentials = credentials
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.http = HttpSession(_new_session)

    def __repr__(self) -> str:
        return f"MnsClient(endpoint={self.endpoint!r})"

    async def close(self) -> None:
        await self.http.close()

    # -- queue operations --

    async def receive(self, queue: str, count: int = MAX_BATCH, wait: int = 0) -> list[Message]:
        """BatchReceiveMessage: up to `count` messages, holding the request up to `wait` s until
        one is visible. An empty queue is an empty list, not an error (MessageNotExist, 4)."""
        count = max(1, min(count, MAX_BATCH))
        wait = max(0, min(wait, MAX_WAIT))
        resource = f"/queues/{check_queue_name(queue)}/messages?numOfMessages={count}"
        if wait:
            resource += f"&waitseconds={wait}"
        try:
            status, root = await self._call("GET", resource, seconds=wait + self.timeout)
        except MnsError as exc:
            if exc.mns_code == "MessageNotExist":
                return []
            raise
        if status != 200 or root is None or _local(root.tag) != "Messages":
            raise _damaged(status, root)
        return [_message(element) for element in root if _local(element.tag) == "Message"]

    async def delete(self, queue: str, receipt_handles: Sequence[str]) -> list[DeleteFailure]:
        """BatchDeleteMessage (at most 16 handles): the handles MNS refused, e.g. expired ones
        (5.3). Refused handles are not an error: their messages will simply come back."""
        if not receipt_handles:
            return []
        if len(receipt_handles) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} receipt handles per batch delete")
        body = _xml(
            "ReceiptHandles",
            "".join(f"<ReceiptHandle>{escape(h)}</ReceiptHandle>" for h in receipt_handles),
        )
        resource = f"/queues/{check_queue_name(queue)}/messages"
        try:
            await self._call("DELETE", resource, body)
        except _BatchErrors as partial:
            return partial.failures
        return []

    async def send(self, queue: str, bodies: Sequence[str], delay_seconds: int = 0) -> list[str]:
        """BatchSendMessage (at most 16 bodies, stored verbatim): their MessageIds."""
        if not bodies or len(bodies) > MAX_BATCH:
            raise ValueError(f"send takes 1 to {MAX_BATCH} bodies")
        inner = "".join(
            f"<Message><MessageBody>{escape(text)}</MessageBody>"
            f"<DelaySeconds>{delay_seconds}</DelaySeconds><Priority>8</Priority></Message>"
            for text in bodies
        )
        resource = f"/queues/{check_queue_name(queue)}/messages"
        status, root = await self._call("POST", resource, _xml("Messages", inner))
        if root is None or _local(root.tag) != "Messages":
            raise _damaged(status, root)
        return [_fields(element).get("MessageId", "") for element in root]

    async def create_queue(
        self, queue: str, *, visibility_timeout: int = 30, polling_wait_seconds: int = 0
    ) -> None:
        """CreateQueue; an existing queue with the same attributes is fine (204)."""
        body = _xml(
            "Queue",
            f"<VisibilityTimeout>{visibility_timeout}</VisibilityTimeout>"
            f"<PollingWaitSeconds>{polling_wait_seconds}</PollingWaitSeconds>",
        )
        await self._call("PUT", f"/queues/{check_queue_name(queue)}", body)

    async def attributes(self, queue: str) -> QueueAttributes:
        """GetQueueAttributes: the queue's depth and settings."""
        status, root = await self._call("GET", f"/queues/{check_queue_name(queue)}")
        if root is None or _local(root.tag) != "Queue":
            raise _damaged(status, root)
        fields = _fields(root)
        try:
            return QueueAttributes(
                name=fields.get("QueueName", queue),
                active=int(fields["ActiveMessages"]),
                inactive=int(fields["InactiveMessages"]),
                delayed=int(fields["DelayMessages"]),
                visibility_timeout=int(fields["VisibilityTimeout"]),
                polling_wait_seconds=int(fields["PollingWaitSeconds"]),
                maximum_message_size=int(fields["MaximumMessageSize"]),
                message_retention_period=int(fields["MessageRetentionPeriod"]),
            )
        except (KeyError, ValueError):
            raise _damaged(status, root) from None

    # -- transport --

    async def signed_headers(self, verb: str, resource: str, body: bytes | None) -> dict[str, str]:
        """The headers of one request, signed over `resource` exactly as it is sent (2.1)."""
        key = await self.credentials.get()
        date = formatdate(usegmt=True)  # RFC 1123 whatever the locale, unlike the SDK's strftime
        content_type = CONTENT_TYPE if body else ""
        headers = {"x-mns-version": API_VERSION}
        text = string_to_sign(verb, "", content_type, date, headers, resource)
        headers["Date"] = date
        if content_type:
            headers["Content-Type"] = content_type
        headers["Authorization"] = authorization(
            key.access_key_id, sign(text, key.access_key_secret)
        )
        if key.security_token:  # not an x-mns- header: never signed (2.1)
            headers["security-token"] = key.security_token
        return headers

    async def _call(
        self, verb: str, resource: str, body: bytes | None = None, *, seconds: float | None = None
    ) -> tuple[int, ElementTree.Element | None]:
        headers = await self.signed_headers(verb, resource, body)
        # encoded=True: yarl must not re-encode the query (a receipt handle's `=`) after signing.
        url = URL(self.endpoint + resource, encoded=True)
        limits = aiohttp.ClientTimeout(total=seconds or self.timeout, connect=self.connect_timeout)
        started = time.monotonic()
        try:
            async with self.http().request(
                verb, url, data=body, headers=headers, timeout=limits, allow_redirects=False
            ) as response:
                status = response.status
                raw = await response.read()
                request_id = response.headers.get("x-mns-request-id")
        except (aiohttp.ClientError, TimeoutError) as exc:
            elapsed = time.monotonic() - started
            detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
            raise MnsUnavailable(
                f"{verb} {self.endpoint}: {detail} after {elapsed:.1f}s",
                mns_code="Unreachable",
                http_status=None,
                request_id=None,
            ) from None
        root = _parse(raw)
        if 200 <= status < 400:
            return status, root
        raise _error(status, root, raw, request_id)


def _new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=30),
        # aiohttp would add its own User-Agent and, for bytes, a Content-Type that is
        # not the one signed; every header that matters is set per request.
        skip_auto_headers=("Content-Type",),
    )


class _BatchErrors(MnsError):
    """A batch delete that failed for some handles (HTTP 404 with <Errors>, 5.3)."""

    def __init__(self, failures: list[DeleteFailure], http_status: int, request_id: str | None):
        first = failures[0] if failures else DeleteFailure("", "Unknown", "")
        super().__init__(
            first.message, mns_code=first.code, http_status=http_status, request_id=request_id
        )
        self.failures = failures


def _xml(root: str, inner: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><{root} xmlns="{XMLNS}">{inner}</{root}>'.encode()
    )


def _parse(raw: bytes) -> ElementTree.Element | None:
    if not raw.strip():
        return None
    try:
        return ElementTree.fromstring(raw)
    except ElementTree.ParseError:
        return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _fields(element: ElementTree.Element) -> dict[str, str]:
    """Child elements as name -> text (namespace dropped; an empty element is "")."""
    return {_local(child.tag): child.text or "" for child in element}


def _message(element: ElementTree.Element) -> Message:
    fields = _fields(element)
    try:
        return Message(
            message_id=fields["MessageId"],
            receipt_handle=fields["ReceiptHandle"],
            body=fields.get("MessageBody", ""),
            body_md5=fields.get("MessageBodyMD5", ""),
            enqueue_time=int(fields.get("EnqueueTime") or 0),
            first_dequeue_time=int(fields.get("FirstDequeueTime") or 0),
            next_visible_time=int(fields.get("NextVisibleTime") or 0),
            dequeue_count=int(fields.get("DequeueCount") or 0),
            priority=int(fields.get("Priority") or 8),
        )
    except (KeyError, ValueError):
        raise MnsError(
            f"a received message lacks MessageId or ReceiptHandle: {sorted(fields)}",
            mns_code="RespDataDamaged",
            http_status=200,
            request_id=None,
        ) from None


def _damaged(status: int, root: ElementTree.Element | None) -> MnsError:
    shape = _local(root.tag) if root is not None else "no XML"
    return MnsError(
        f"unexpected answer: {shape}",
        mns_code="RespDataDamaged",
        http_status=status,
        request_id=None,
    )


def _error(
    status: int, root: ElementTree.Element | None, raw: bytes, request_id: str | None
) -> MnsError:
    if root is not None and _local(root.tag) == "Errors":
        failures = []
        for element in root:
            error = _fields(element)
            failures.append(
                DeleteFailure(
                    error.get("ReceiptHandle", ""),
                    error.get("ErrorCode", "Unknown"),
                    error.get("ErrorMessage", ""),
                )
            )
        return _BatchErrors(failures, status, request_id)
    fields = _fields(root) if root is not None else {}
    code = str(fields.get("Code") or f"HTTP{status}")
    # An answer that is not MNS's error XML is told by status and size, never quoted.
    message = str(fields.get("Message") or unreadable_answer(status, raw))
    request_id = fields.get("RequestId") or request_id
    transient = status >= 500 or status == 429 or code in TRANSIENT_CODES
    kind = MnsUnavailable if transient else MnsError
    return kind(message, mns_code=code, http_status=status, request_id=request_id)
