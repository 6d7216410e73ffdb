"""The VOD client: one aiohttp session, bounded retries, the shared rate limiter.

No database here. A call that fails raises one of the typed errors of `errors.py`; a call is
retried only where repeating it cannot do anything twice (throttling, no connection, IDEMPOTENT).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import aiohttp

from tracker.closing import Closing, HttpSession
from tracker.config import Settings
from tracker.errors import unreadable_answer
from tracker.metrics import VOD_CALLS, VOD_SECONDS
from tracker.vod.credentials import (
    SOURCES_HINT,
    AccessKey,
    Credentials,
    CredentialsUnavailable,
    credentials_from_settings,
)
from tracker.vod.errors import (
    CREDENTIAL_CODES,
    VodAnswerUnclear,
    VodError,
    VodOutcomeUnknown,
    VodRequestInvalid,
    VodThrottled,
    VodUnreachable,
    as_throttled,
    is_throttling,
)
from tracker.vod.mediainfo import INFO_QPS
from tracker.vod.results import (
    LIST_LIMIT,
    AIJob,
    AIJobDetail,
    AIJobStatus,
    JobInfo,
    ListResult,
    SubmitResult,
    ai_job_detail,
    as_list,
    job_infos,
    missing_ids,
    opt_str,
)
from tracker.vod.signing import API_VERSION, format_timestamp, percent_encode, sign_v1

log = logging.getLogger(__name__)

# Config and UserData, in bytes of JSON as sent. VOD states no limit [U] (vod-reference.md 9);
# its documented values are under 100 bytes (Extend at most 512, a CallbackURL at most 256), and
# the SDKs carry every parameter in the URL, which gateways cap near 8 KiB once percent-encoded.
# The simulator (tracker/fakevod) refuses larger ones as InvalidParameter.
PARAMETER_LIMIT = 2048
# `Code` values that mean success where a 2xx body carries one (sections 3.1, 6.2).
SUCCESS_CODES = frozenset({"0", "200", "OK", "Success"})
# Actions that change nothing when repeated; only these are retried after the request was sent.
IDEMPOTENT = frozenset(
    {
        "ListAIJob",
        "GetAIVideoTagResult",
        "GetMediaDNAResult",
        "GetMessageCallback",
        "SetMessageCallback",
        "ListJobInfo",
        "GetJobDetail",
        "GetVideoInfo",
        "GetVideoInfos",
    }
)
# Actions with a per-account limit of their own below the client's rate (joblookup 1, 2): each
# takes a slot of its own limiter as well as one of the shared one.
ACTION_QPS: dict[str, float] = {"ListJobInfo": 15.0, "GetJobDetail": 15.0}
# Actions with a per-account limit of their own above the client's rate: they take a slot of
# their own limiter only, so that reading durations never slows SubmitAIJob (mediainfo 1, 2).
OWN_QPS: dict[str, float] = {"GetVideoInfo": INFO_QPS, "GetVideoInfos": INFO_QPS}


class RateLimiter:
    """Evenly spaced slots at `rate` per second (burst 1), safe across tasks and event loops.

    Each caller takes the next free slot synchronously, then sleeps until it, so no lock is held
    and the achieved rate is the configured one under any concurrency.
    """

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._next = 0.0

    async def acquire(self) -> None:
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + 1.0 / self.rate
        if slot > now:
            await asyncio.sleep(slot - now)


_LIMITERS: dict[tuple[str, str, float, str], RateLimiter] = {}


def shared_limiter(endpoint: str, account: str, rate: float, action: str = "") -> RateLimiter:
    """One limiter per (endpoint, account, rate) in the process: VOD's limit is per account.
    `account` names the credential source, not a key id, which rotates with STS; `action` names a
    limiter for that action alone (ACTION_QPS)."""
    key = (endpoint, account, rate, action)
    if key not in _LIMITERS:
        _LIMITERS[key] = RateLimiter(rate)
    return _LIMITERS[key]


class VodClient(Closing):
    """One per process and region: owns one aiohttp session, uses the process-wide rate limiter
    and signs every request with the current credentials (shared between regions)."""

    def __init__(
        self,
        settings: Settings,
        *,
        region: str | None = None,
        credentials: Credentials | None = None,
        backoff: float = 0.2,
        backoff_cap: float = 5.0,
        limiter: RateLimiter | None = None,
    ) -> None:
        credentials = credentials or credentials_from_settings(settings)
        if credentials is None:
            raise ValueError(f"VodClient needs credentials: set {SOURCES_HINT}")
        self.credentials = credentials
        self.region = region or settings.vod_region
        endpoint = settings.vod_url_for(self.region).rstrip("/")
        self.endpoint = endpoint if "://" in endpoint else f"https://{endpoint}"
        self.retries = settings.vod_retries
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self._timeout = aiohttp.ClientTimeout(
            total=settings.vod_timeout.total_seconds(),
            connect=settings.vod_connect_timeout.total_seconds(),
        )
        self.limiter = limiter or shared_limiter(
            self.endpoint, credentials.source, settings.vod_rate_limit
        )
        self.http = HttpSession(self._new_session)

    def __repr__(self) -> str:
        return f"VodClient(region={self.region!r}, endpoint={self.endpoint!r}, {self.credentials})"

    async def close(self) -> None:
        await self.http.close()

    def _new_session(self) -> aiohttp.ClientSession:
        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(_mark_sent)
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=10, ttl_dns_cache=300),
            timeout=self._timeout,
            trace_configs=[trace],
            headers={"Accept": "application/json"},
        )

    # -- actions --

    async def submit_ai_job(
        self,
        media_id: str,
        types: Sequence[str],
        config: Mapping[str, Any] | None = None,
        user_data: Mapping[str, Any] | None = None,
    ) -> SubmitResult:
        """Start one AI job per type. Never retried once it may have reached VOD (no idempotency
        token, section 2): such failures raise VodOutcomeUnknown."""
        if not media_id or not types:
            raise ValueError("submit_ai_job needs a media id and at least one type")
        params = {"MediaId": media_id, "Types": ",".join(types)}
        if config:
            params["Config"] = json_param("Config", config)
        if user_data:
            params["UserData"] = json_param("UserData", user_data)
        body = await self.call("SubmitAIJob", params)
        jobs = [
            AIJob(str(j.get("JobId", "")), str(j.get("MediaId", media_id)), str(j.get("Type", "")))
            for j in as_list(body.get("AIJobList"), "AIJob")
        ]
        return SubmitResult(str(body.get("RequestId", "")), jobs)

    async def list_ai_jobs(self, job_ids: Sequence[str]) -> ListResult:
        if len(job_ids) > LIST_LIMIT:
            raise ValueError(f"ListAIJob takes at most {LIST_LIMIT} job ids, got {len(job_ids)}")
        if not job_ids:
            return ListResult("", [], [])
        body = await self.call("ListAIJob", {"JobIds": ",".join(job_ids)})
        jobs = [AIJobStatus.from_vod(j) for j in as_list(body.get("AIJobList"), "AIJob")]
        return ListResult(str(body.get("RequestId", "")), jobs, missing_ids(body))

    async def list_job_info(self, media_id: str, job_type: str = "ai") -> list[JobInfo]:
        """ListJobInfo: the media's jobs of `job_type` of the last six months, unpaginated
        (joblookup 1). At most 15 calls per second per account."""
        if not media_id:
            raise ValueError("list_job_info needs a media id")
        body = await self.call("ListJobInfo", {"MediaId": media_id, "JobType": job_type})
        return job_infos(body)

    async def get_job_detail(self, job_id: str, job_type: str = "ai") -> AIJobDetail | None:
        """GetJobDetail: an AI job's subtype, status and trigger; None when VOD answers without
        an `AIJobDetail` (joblookup 2). At most 15 calls per second per account."""
        if not job_id:
            raise ValueError("get_job_detail needs a job id")
        body = await self.call("GetJobDetail", {"JobId": job_id, "JobType": job_type})
        return ai_job_detail(body)

    async def get_ai_video_tag_result(self, media_id: str) -> dict[str, Any]:
        body = await self.call("GetAIVideoTagResult", {"MediaId": media_id})
        return dict(body.get("VideoTagResult") or {})

    async def get_media_dna_result(self, media_id: str) -> dict[str, Any]:
        body = await self.call("GetMediaDNAResult", {"MediaId": media_id})
        return dict(body.get("DNAResult") or {})

    async def get_message_callback(self, app_id: str | None = None) -> dict[str, Any]:
        body = await self.call("GetMessageCallback", {"AppId": app_id} if app_id else {})
        return dict(body.get("MessageCallback") or {})

    async def set_message_callback(self, **params: str) -> None:
        await self.call("SetMessageCallback", {k: v for k, v in params.items() if v is not None})

    # -- transport --

    def signed_params(
        self, action: str, params: Mapping[str, str], key: AccessKey
    ) -> dict[str, str]:
        """The action's parameters plus the common ones and the v1 signature (section 1.3);
        `SecurityToken` when the credentials are STS ones."""
        signed = {
            "Action": action,
            "Version": API_VERSION,
            "Format": "JSON",
            "AccessKeyId": key.access_key_id,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "SignatureNonce": uuid.uuid4().hex,
            "Timestamp": format_timestamp(datetime.now(UTC)),
            "RegionId": self.region,
            **params,
        }
        if key.security_token:
            signed["SecurityToken"] = key.security_token
        signed["Signature"] = sign_v1("POST", signed, key.access_key_secret)
        return signed

    async def call(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        """One VOD action with bounded retries; raises the typed errors above."""
        attempt = 0
        renewed = False
        while True:
            await self._wait_for_slot(action)
            try:
                # Fetched after the limiter's wait, so a request never goes out with
                # credentials that expired while it queued.
                key = await self._key(action)
                body = await self._attempt(action, params, key)
            except VodError as exc:
                if exc.vod_code in CREDENTIAL_CODES and not renewed:
                    renewed = self.credentials.invalidate(key)
                    if renewed:
                        log.warning("VOD %s: %s; renewing the credentials", action, exc.vod_code)
                        continue
                throttled = is_throttling(exc)
                if not throttled or attempt >= self.retries:
                    outcome = "throttled" if throttled else "error"
                    VOD_CALLS.labels(action, outcome).inc()
                    if throttled and not isinstance(exc, VodThrottled):
                        raise as_throttled(exc) from None
                    raise
                reason = exc.vod_code
            except VodOutcomeUnknown:
                VOD_CALLS.labels(action, "unknown").inc()
                raise
            except VodUnreachable:
                if attempt >= self.retries:
                    VOD_CALLS.labels(action, "unreachable").inc()
                    raise
                reason = "unreachable"
            else:
                VOD_CALLS.labels(action, "ok").inc()
                return body
            delay = random.uniform(0, min(self.backoff_cap, self.backoff * 2**attempt))
            attempt += 1
            VOD_CALLS.labels(action, "retried").inc()
            log.warning(
                "VOD %s: %s, retry %d/%d in %.2fs", action, reason, attempt, self.retries, delay
            )
            await asyncio.sleep(delay)

    async def _wait_for_slot(self, action: str) -> None:
        source = self.credentials.source
        if action in OWN_QPS:
            await shared_limiter(self.endpoint, source, OWN_QPS[action], action).acquire()
            return
        if action in ACTION_QPS:
            rate = min(ACTION_QPS[action], self.limiter.rate)
            await shared_limiter(self.endpoint, source, rate, action).acquire()
        await self.limiter.acquire()

    async def _key(self, action: str) -> AccessKey:
        try:
            return await self.credentials.get()
        except CredentialsUnavailable as exc:
            raise VodUnreachable(f"VOD {action}: not sent: {exc.message}") from None

    async def _attempt(
        self, action: str, params: Mapping[str, str], key: AccessKey
    ) -> dict[str, Any]:
        try:
            form = self.signed_params(action, params, key)
        except ValueError as exc:  # e.g. UnicodeEncodeError: text that is not valid UTF-8
            raise VodRequestInvalid(f"VOD {action}: not sent: {exc}") from None
        sent = SimpleNamespace(sent=False)
        started = time.monotonic()
        try:
            # POST with a form body keeps SecurityToken and Signature out of the URL, hence out of
            # any exception text or proxy log that quotes it.
            async with self.http().post(
                self.endpoint + "/", data=form, trace_request_ctx=sent, allow_redirects=False
            ) as response:
                status = response.status
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = _redact(f"{type(exc).__name__}: {exc}".rstrip(": "), key)
            if not sent.sent:
                raise VodUnreachable(f"VOD {action}: not sent: {detail}") from None
            if action in IDEMPOTENT:
                # Safe to repeat: treat like a failure to reach VOD, so it is retried.
                raise VodUnreachable(f"VOD {action}: no answer: {detail}") from None
            raise VodOutcomeUnknown(
                f"VOD {action}: request sent but no answer ({detail}); it may have been applied"
            ) from None
        finally:
            VOD_SECONDS.labels(action).observe(time.monotonic() - started)
        return self._parse(action, status, raw, key)

    def _parse(self, action: str, status: int, raw: bytes, key: AccessKey) -> dict[str, Any]:
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = None
        if 200 <= status < 300 and body is not None and not _error_in_success(body):
            return body
        if body is not None and "Code" in body:
            error = VodError(
                _redact(str(body.get("Message", "")), key),
                vod_code=str(body["Code"]),
                http_status=status,
                request_id=opt_str(body.get("RequestId")),
                recommend=opt_str(body.get("Recommend")),
            )
        else:
            # Not VOD's error shape (a proxy's page, say): told by status and size, never
            # quoted, as it may echo the request (tracker/errors.py).
            error = VodError(
                f"unexpected answer: {unreadable_answer(status, raw)}",
                vod_code="InvalidResponse" if 200 <= status < 300 else f"HTTP{status}",
                http_status=status,
            )
        if action == "SubmitAIJob" and (
            (200 <= status < 300) or (status >= 500 and not is_throttling(error))
        ):
            # A 2xx we cannot read, or a server-side 5xx, may still have started a paid job.
            unknown = VodAnswerUnclear if 200 <= status < 300 else VodOutcomeUnknown
            raise unknown(
                f"VOD SubmitAIJob: {error}; the job may have been created",
                vod_code=error.vod_code,
                http_status=status,
                request_id=error.request_id,
            )
        raise error


async def _mark_sent(session: aiohttp.ClientSession, ctx: SimpleNamespace, params: object) -> None:
    if ctx.trace_request_ctx is not None:
        ctx.trace_request_ctx.sent = True


def _redact(text: str, key: AccessKey) -> str:
    """Remove the secret and the STS token in every encoding VOD might echo them in."""
    for value in (key.access_key_secret, key.security_token):
        if not value:
            continue
        forms = {value, percent_encode(value), percent_encode(percent_encode(value))}
        forms.add(quote(value, safe=""))
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, "***")
    return text


def json_param(name: str, value: Mapping[str, Any]) -> str:
    """A JSON parameter (`Config`, `UserData`) as VOD takes it: JSON text (section 2), so no
    NaN or Infinity; UTF-8 (section 1.2), so no lone surrogate; at most PARAMETER_LIMIT bytes.
    Anything else raises VodRequestInvalid: refused here, before it is sent or billed."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise VodRequestInvalid(
            f"{name}: text that is not valid UTF-8 (a lone surrogate)"
        ) from None
    except ValueError:
        raise VodRequestInvalid(f"{name}: NaN and Infinity are not JSON") from None
    except RecursionError:
        raise VodRequestInvalid(f"{name}: nested too deeply") from None
    if size > PARAMETER_LIMIT:
        raise VodRequestInvalid(f"{name}: {size} bytes; at most {PARAMETER_LIMIT} are sent")
    return text


def _error_in_success(body: Mapping[str, Any]) -> bool:
    """An error `Code` at the top of a 2xx body that carries no result: VOD's error shape
    (section 1.4) with the wrong status. Job items carry a Code too (section 3.1), never here."""
    code = body.get("Code")
    return code is not None and str(code) not in SUCCESS_CODES and not body.get("AIJobList")
