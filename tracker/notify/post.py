"""One signed webhook POST, and what it came to: no database, no settings object.

`send` is what the relay's lanes (in-process, or through the courier's child process) and the
pings use. It never raises: refused addresses, timeouts and network errors are results too.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp

from tracker.notify.egress import EgressRefused, GuardedResolver, RecentVerdicts, check_url
from tracker.notify.signing import webhook_headers

READ_LIMIT = 64 * 1024  # bytes of a response read at most; the rest is never downloaded
USER_AGENT = "vod-ai-tracker-webhooks"
MAX_RETRY_AFTER = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one HTTP attempt came to."""

    status_code: int | None
    duration_ms: float
    error: str | None = None
    body: str | None = None
    retry_after: timedelta | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410

    def fields(self) -> tuple[int | None, float, str | None, str | None, timedelta | None]:
        """The fields in order, so that `AttemptResult(*result.fields())` is `result` again."""
        return self.status_code, self.duration_ms, self.error, self.body, self.retry_after


def webhook_session(allow_private: bool) -> aiohttp.ClientSession:
    """The webhooks' client: no redirects (per request), no proxies from the environment, no
    cookies, and a resolver that refuses forbidden addresses at connect time."""
    # The lanes bound the requests (TRACKER_NOTIFY_CONCURRENCY per subscription), the pool does
    # not: a limit per host would make subscriptions on one host wait, inside their timeouts,
    # for each other's slow requests. Connections are kept alive and reused per receiver.
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(allow_private), limit=0, limit_per_host=0
    )
    # No cookie jar: a cookie one receiver sets would go with every later request to its host,
    # other subscriptions' (other tenants') included.
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"user-agent": USER_AGENT},
        trust_env=False,
        auto_decompress=False,
    )


async def send(
    http: aiohttp.ClientSession,
    url: str,
    secrets: Sequence[str],
    msg_id: str,
    body: bytes,
    now: datetime,
    *,
    time_limit: float,
    allow_private: bool,
    verdicts: RecentVerdicts | None = None,
) -> AttemptResult:
    """One signed POST of at most `time_limit` seconds; whatever happens, an AttemptResult (never
    an exception). The URL is checked first (`verdicts`: as recently as they keep)."""
    started = time.monotonic()

    def took() -> float:
        return (time.monotonic() - started) * 1000

    try:
        if verdicts is None:
            await check_url(url, allow_private=allow_private)
        else:
            await verdicts.check(url, allow_private=allow_private)
    except EgressRefused as exc:
        return AttemptResult(None, took(), error=f"refused: {exc.message}")
    headers = webhook_headers(secrets, msg_id, int(now.timestamp()), body)
    try:
        async with http.post(
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=time_limit),
        ) as response:
            answer = await read_bounded(response)
            return AttemptResult(
                response.status,
                took(),
                body=answer.decode("utf-8", "replace").replace("\x00", ""),
                retry_after=retry_after(response, now),
            )
    except TimeoutError:
        return AttemptResult(None, took(), error="timeout")
    except (aiohttp.ClientError, OSError) as exc:
        return AttemptResult(None, took(), error=f"{type(exc).__name__}: {exc}"[:500])


async def read_bounded(response: aiohttp.ClientResponse) -> bytes:
    """At most READ_LIMIT bytes of the body: a huge answer is cut, never held in memory."""
    chunks: list[bytes] = []
    size = 0
    while size < READ_LIMIT:
        chunk = await response.content.read(READ_LIMIT - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def retry_after(response: aiohttp.ClientResponse, now: datetime) -> timedelta | None:
    """Retry-After of a 429 or 503: seconds, or an HTTP date; at most MAX_RETRY_AFTER (a day)
    whatever the number or the date, and None when it is neither."""
    if response.status not in (429, 503):
        return None
    raw = response.headers.get("retry-after", "").strip()
    if not raw:
        return None
    if raw.isascii() and raw.isdigit():
        # Any number of digits: clamped before timedelta sees it (it overflows past ~10^14 s).
        return timedelta(seconds=min(int(raw), int(MAX_RETRY_AFTER.total_seconds())))
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, OverflowError, IndexError):  # malformed, or out of range
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(MAX_RETRY_AFTER, max(timedelta(), when - now))
