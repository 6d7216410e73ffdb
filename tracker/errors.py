"""The tracker's exceptions, each carrying the HTTP status and JSON body it maps to.

Core, no I/O. The body (`Error`) is declared here because every layer raises these; it is listed
with the other HTTP bodies in tracker/api/schemas/.

One rule for every error that crosses a boundary (an HTTP answer, a job's message, hence the
change log and the webhooks, a log line): it names the source and the kind of failure, and never
quotes a peer's answer (a credentials service, a proxy or a gateway may echo a secret in it) nor
what follows a URL's host (tokens ride in its query, and in some paths). `redact_url` and
`unreadable_answer` are how a URL and an answer are shown.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field
from typing_extensions import TypedDict, Unpack


class ErrorDetails(TypedDict, total=False):
    """What an error may add to its code and message, each key only where it applies."""

    parameter: Annotated[str, Field(description="the parameter or field at fault")]
    job_id: str
    subscription_id: int
    delivery_id: int
    valid_types: list[str]
    region: str
    limit: Annotated[int, Field(description="the bound exceeded, in bytes")]
    vod_code: Annotated[str, Field(description="VOD's error Code")]
    mns_code: Annotated[str, Field(description="MNS's error Code")]
    http_status: Annotated[int | None, Field(description="the status VOD or MNS answered")]
    request_id: Annotated[str | None, Field(description="VOD's RequestId")]


class Error(ErrorDetails):
    """The body of every error answer."""

    error: Annotated[str, Field(description="machine-readable code")]
    message: str


class TrackerError(Exception):
    """Base of every error the tracker raises on purpose."""

    status_code = 500
    code = "internal_error"
    headers: dict[str, str] | None = None

    def __init__(self, message: str, **details: Unpack[ErrorDetails]) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> Error:
        return {"error": self.code, "message": self.message, **self.details}


class ConfigError(TrackerError):
    """A setting is missing or malformed; raised at startup."""

    code = "config_error"


class BadRequest(TrackerError):
    status_code = 400
    code = "bad_request"


class Unauthorized(TrackerError):
    status_code = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="tracker"'}


class Forbidden(TrackerError):
    status_code = 403
    code = "forbidden"


class NotFound(TrackerError):
    status_code = 404
    code = "not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class PayloadTooLarge(TrackerError):
    status_code = 413
    code = "payload_too_large"


class RequestTimeout(TrackerError):
    status_code = 408
    code = "request_timeout"


class UnsupportedMediaType(TrackerError):
    status_code = 415
    code = "unsupported_media_type"


class Unavailable(TrackerError):
    """A dependency (the database) is down; the caller should retry."""

    status_code = 503
    code = "unavailable"


def describe(exc: BaseException) -> str:
    """An exception in one short line for logs and summaries: its type and first line."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first[:200]}"


def redact_url(url: str) -> str:
    """A URL as an error or a log may show it: its scheme, host and port; anything after them
    (a path, a query, a fragment) is `/...` and a user or password `...@`, since each may carry
    a token (a webhook's path, a credentials URI's query)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(a URL that does not parse)"
    if not parts.scheme or not host:
        return "(a URL without a scheme and host)"
    if ":" in host:
        host = f"[{host}]"
    user = "...@" if "@" in parts.netloc else ""
    rest = "/..." if parts.path.strip("/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{user}{host}{f':{port}' if port else ''}{rest}"


def unreadable_answer(status: int | None, raw: bytes) -> str:
    """A peer's answer that is not what was expected, as its status and size, never its text."""
    said = f"HTTP {status}" if status is not None else "an answer"
    return f"{said}, {len(raw)} bytes not in the expected format"
