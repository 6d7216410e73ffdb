"""Simulator, HTTP actions: VOD's signed RPC API (and STS's) in front of the engine and callbacks.

The API's own faults live here too (errors, throttling, slow, cut or lost answers).

Held to ../shared/vod-reference.md: it verifies requests the way the gateway does (section 4) and
answers with VOD's bodies and error shapes (sections 1-3); the jobs run in `engine`, their events
go out through `callbacks` (section 6).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from tracker.clock import Clock
from tracker.fakevod.callbacks import Callbacks
from tracker.fakevod.engine import JobEngine
from tracker.fakevod.faults import Faults
from tracker.fakevod.gateway import Gateway, Refused, required
from tracker.fakevod.jobs import Delivery, FakeJob, json_param, user_data_fields
from tracker.fakevod.listen import CannotListen, listen
from tracker.fakevod.media import MediaLibrary, no_such_video
from tracker.fakevod.mns import FakeMns
from tracker.vod import JOB_TYPES, LIST_LIMIT

log = logging.getLogger(__name__)

JOB_KINDS = ("transcode", "snapshot", "ai")  # ListJobInfo's JobType (joblookup 1)


class FakeVod:
    """The simulator. `faults` may be changed while it runs; `jobs` is the truth."""

    def __init__(
        self,
        *,
        access_key_id: str,
        access_key_secret: str,
        callback_url: str | None = None,
        auth_key: str | None = None,
        extra_callback_urls: list[str] | None = None,
        seed: int | None = None,
        sts_ttl: float | None = None,
        mns_queue: str | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.faults = faults if faults is not None else Faults()
        # sts_ttl: GET /credentials hands out STS credentials living this many seconds.
        self.gateway = Gateway(access_key_id, access_key_secret, sts_ttl=sts_ttl)
        # MNS's queue API, on a port of its own, with the same key pair (mns-reference.md 9).
        self.mns = FakeMns(access_key_id, access_key_secret, seed=seed)
        self.mns_queue = mns_queue
        self.callbacks = Callbacks(
            self.faults,
            self.mns,
            callback_url=callback_url,
            auth_key=auth_key,
            extra_callback_urls=extra_callback_urls,
        )
        self.engine = JobEngine(self.faults, seed, self.callbacks.publish)
        # The videos and their durations (GetVideoInfo, GetVideoInfos); tests may add their own.
        self.media = MediaLibrary(self.faults, seed)
        # The same objects, under the names tests and demos read.
        self.jobs: dict[str, FakeJob] = self.engine.jobs
        self.message_callback: dict[str, str] = self.callbacks.config
        self.deliveries: list[Delivery] = self.callbacks.deliveries
        self.dropped: list[str] = self.callbacks.dropped  # job ids never acknowledged
        self.user_id = 1_391_090_000_849_30  # UserId of ListJobInfo and GetJobDetail (an int)
        # A stream of its own, so that how often the tracker polls cannot change which jobs fail.
        self._api_rng = random.Random(None if seed is None else f"api-{seed}")
        self.oidc_tokens: list[str] = []  # as AssumeRoleWithOIDC received them
        self.submit_calls = 0
        self.lost_submits = 0
        self.requests = 0
        self.refused: dict[str, int] = {}  # error code -> how many answers carried it
        self.calls: dict[str, int] = {}  # action -> signed calls let through to it
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- runtime knobs --

    @property
    def access_key_id(self) -> str:
        return self.gateway.access_key_id

    @property
    def clock(self) -> Clock:
        """The jobs' CreateTime and CompleteTime; tests may share their injected clock.
        Signatures are always checked against the wall clock, as VOD's gateway does."""
        return self.engine.clock

    @clock.setter
    def clock(self, value: Clock) -> None:
        self.engine.clock = value

    @property
    def callback_url(self) -> str | None:
        return self.message_callback["CallbackURL"] or None

    @callback_url.setter
    def callback_url(self, value: str | None) -> None:
        self.message_callback["CallbackURL"] = value or ""

    @property
    def auth_key(self) -> str | None:
        return self.callbacks.auth_key

    @auth_key.setter
    def auth_key(self, value: str | None) -> None:
        self.callbacks.auth_key = value

    @property
    def extra_callback_urls(self) -> list[str]:
        return self.callbacks.extra_urls

    @extra_callback_urls.setter
    def extra_callback_urls(self, value: list[str]) -> None:
        self.callbacks.extra_urls = list(value)

    def __repr__(self) -> str:
        return f"FakeVod(url={self.url!r}, access_key_id={self.access_key_id!r})"

    # -- lifecycle --

    async def start(self, host: str = "127.0.0.1", port: int = 0, mns_port: int | None = 0) -> str:
        """Serve the API on `port`, and MNS's queue API on `mns_port` (0: a free port). With
        `mns_port=None` MNS is served only for a queue asked for (`mns_queue`), on a free port."""
        if mns_port is not None or self.mns_queue is not None:
            await self.mns.start(host, mns_port or 0)
        if self.mns_queue is not None:
            self.mns.create_queue(self.mns_queue)
            self.callbacks.to_queue(self.mns_queue)
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/", self._handle)
        app.router.add_get("/credentials", self._credentials)
        try:
            self._runner, self.url = await listen(app, host, port)
        except CannotListen:
            await self.mns.stop()
            raise
        await self.callbacks.open()
        return self.url

    async def stop(self) -> None:
        await self.engine.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.callbacks.close()
        await self.mns.stop()

    async def __aenter__(self) -> FakeVod:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def idle(self, timeout: float) -> None:  # noqa: ASYNC109 - the agreed interface
        """Wait until every job finished and every delivery ended; TimeoutError otherwise."""
        await self.engine.idle(timeout)

    def emit_unsolicited(self, media_id: str | None = None) -> FakeJob:
        """A DNA job nobody submitted, as VOD runs after each upload (section 7)."""
        return self.engine.emit_unsolicited(media_id)

    @property
    def credentials_uri(self) -> str:
        """ALIBABA_CLOUD_CREDENTIALS_URI for the STS credentials it hands out (with sts_ttl)."""
        return f"{self.url}/credentials"

    # -- the API --

    async def _credentials(self, request: web.Request) -> web.Response:
        """A credentials URI (ALIBABA_CLOUD_CREDENTIALS_URI), answering in the format the
        alibabacloud-credentials library reads; 404 unless started with sts_ttl."""
        if self.gateway.sts_ttl is None:
            return web.json_response(
                {"Code": "NotFound", "Message": "started without --sts-ttl"}, status=404
            )
        return web.json_response(self.gateway.issue_sts().as_json())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        request_id = self._request_id()
        try:
            body = {"RequestId": request_id, **await self._answer(request)}
        except AnswerLost:
            return await _close_unanswered(request)
        except Refused as refusal:
            self.refused[refusal.code] = self.refused.get(refusal.code, 0) + 1
            return _error_response(request, request_id, refusal)
        except Exception:
            # A bug of the simulator must still look like VOD to the caller, not a traceback.
            log.exception("fake VOD failed on a request")
            error = Refused(500, "InternalError", "The request processing has failed.")
            return _error_response(request, request_id, error)
        if self._api_chance(self.faults.slow_rate):
            # The work is done; answering late lets the caller time out after the fact.
            await asyncio.sleep(self.faults.slow_seconds)
        payload = json.dumps(body).encode()
        if self._api_chance(self.faults.reset_rate):
            return await _reset_midway(request, payload)
        return web.Response(body=payload, content_type="application/json")

    async def _answer(self, request: web.Request) -> dict[str, Any]:
        if request.query.get("Action") == "AssumeRoleWithOIDC":
            return self._assume_role_with_oidc(request.query)
        action, params = await self.gateway.authenticate(request)
        self.gateway.throttle(self.faults.qps)
        if self._api_chance(self.faults.error_rate):
            raise Refused(
                500, "InternalError", "The request processing has failed due to some unknown error."
            )
        self.calls[action] = self.calls.get(action, 0) + 1
        handler = self._actions().get(action)
        if handler is None:
            raise Refused(404, "InvalidAction.NotFound", f"Specified api is not found: {action}")
        return handler(params)

    def _actions(self) -> dict[str, Callable[[Mapping[str, str]], dict[str, Any]]]:
        return {
            "SubmitAIJob": self._submit,
            "ListAIJob": self._list,
            "GetAIVideoTagResult": self._tag_result,
            "GetMediaDNAResult": self._dna_result,
            "GetMessageCallback": self._get_callback,
            "SetMessageCallback": self._set_callback,
            "ListJobInfo": self._list_job_info,
            "GetJobDetail": self._job_detail,
            "GetVideoInfo": self.media.video_info,
            "GetVideoInfos": self.media.video_infos,
        }

    def _assume_role_with_oidc(self, params: Mapping[str, str]) -> dict[str, Any]:
        """STS's AssumeRoleWithOIDC (RRSA), unsigned like the real one: the OIDC token is the
        proof. Hands out the same short-lived credentials as GET /credentials, whatever
        DurationSeconds asks for."""
        if self.gateway.sts_ttl is None:
            raise Refused(404, "InvalidAction.NotFound", "started without sts_ttl")
        role_arn = required(params, "RoleArn")
        required(params, "OIDCProviderArn")
        self.oidc_tokens.append(required(params, "OIDCToken"))
        sts = self.gateway.issue_sts().as_json()
        return {
            "AssumedRoleUser": {"Arn": f"{role_arn}/{params.get('RoleSessionName', '')}"},
            "Credentials": {
                k: sts[k] for k in ("AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration")
            },
        }

    def _submit(self, params: Mapping[str, str]) -> dict[str, Any]:
        media_id = required(params, "MediaId")
        types = [t.strip() for t in required(params, "Types").split(",") if t.strip()]
        if not types or any(t not in JOB_TYPES for t in types):
            raise Refused(
                400,
                "InvalidParameter",
                f"The specified parameter Types is not valid: {params['Types']}",
            )
        json_param(params, "Config")
        user_data = json_param(params, "UserData")
        callback_url, extend = user_data_fields(user_data)
        if self.faults.take("submit_error_next"):
            raise Refused(500, "InternalError", "The request processing has failed.")
        if self.media.get(media_id) is None:  # the code is a guess (mediainfo 3 [U])
            raise no_such_video()
        self.submit_calls += 1
        engine = self.engine
        jobs = [engine.create(media_id, t, callback_url, extend) for t in dict.fromkeys(types)]
        if engine.chance(self.faults.unsolicited_rate):
            self.emit_unsolicited()
        if self.faults.take("lose_submit_next") or self._api_chance(self.faults.lose_submit_rate):
            self.lost_submits += 1
            raise AnswerLost
        return {
            "AIJobList": {
                "AIJob": [{"JobId": j.job_id, "MediaId": j.media_id, "Type": j.type} for j in jobs]
            }
        }

    def _list(self, params: Mapping[str, str]) -> dict[str, Any]:
        ids = [i.strip() for i in required(params, "JobIds").split(",") if i.strip()]
        if len(ids) > LIST_LIMIT:
            raise Refused(400, "InvalidParameter", f"JobIds holds more than {LIST_LIMIT} ids")
        found = [self.jobs[i].list_item() for i in ids if i in self.jobs]
        missing = [i for i in ids if i not in self.jobs]
        return {"AIJobList": {"AIJob": found}, "NonExistAIJobIds": {"String": missing}}

    def _list_job_info(self, params: Mapping[str, str]) -> dict[str, Any]:
        """The media's jobs, oldest first, as a flat `JobInfoList` (joblookup 1). The order and
        the AI `Status` values are undocumented [U]: these are ListAIJob's, lower case."""
        media_id = required(params, "MediaId")
        job_type = required(params, "JobType")
        if job_type not in JOB_KINDS:
            raise Refused(
                400, "InvalidParameter", f"The specified parameter JobType is not valid: {job_type}"
            )
        jobs = [j for j in self.jobs.values() if j.media_id == media_id] if job_type == "ai" else []
        jobs.sort(key=lambda j: j.creation_time)
        return {
            "MediaId": media_id,
            "JobType": job_type,
            "JobInfoList": [j.job_info(self.user_id) for j in jobs],
        }

    def _job_detail(self, params: Mapping[str, str]) -> dict[str, Any]:
        """`AIJobDetail` of one AI job (joblookup 2). The error for an unknown JobId is
        undocumented [U]: this one has VOD's error shape."""
        job_id = required(params, "JobId")
        job_type = required(params, "JobType")
        if job_type not in (*JOB_KINDS, "workflow"):
            raise Refused(
                400, "InvalidParameter", f"The specified parameter JobType is not valid: {job_type}"
            )
        job = self.jobs.get(job_id)
        if job is None or job_type != "ai":
            raise Refused(404, "InvalidJobId.NotFound", f"The job {job_id} does not exist.")
        return {"JobType": job_type, "AIJobDetail": job.detail(self.user_id)}

    def _latest(self, media_id: str, job_type: str) -> FakeJob | None:
        done = [
            j
            for j in self.jobs.values()
            if j.media_id == media_id and j.type == job_type and j.status == "success"
        ]
        return max(done, key=lambda j: j.complete_time or j.creation_time, default=None)

    def _tag_result(self, params: Mapping[str, str]) -> dict[str, Any]:
        job = self._latest(required(params, "MediaId"), "AIVideoTag")
        return {"VideoTagResult": json.loads(job.data)} if job else {}

    def _dna_result(self, params: Mapping[str, str]) -> dict[str, Any]:
        job = self._latest(required(params, "MediaId"), "AIMediaDNA")
        return {"DNAResult": json.loads(job.data)} if job else {}

    def _get_callback(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {"MessageCallback": dict(self.message_callback)}

    def _set_callback(self, params: Mapping[str, str]) -> dict[str, Any]:
        changes = {k: params[k] for k in self.message_callback if k in params and k != "AppId"}
        if changes.get("CallbackType", "HTTP").upper() not in ("HTTP", "MNS"):
            raise Refused(400, "InvalidParameter", "CallbackType must be HTTP or MNS")
        if changes.get("AuthSwitch", "on") not in ("on", "off"):
            raise Refused(400, "InvalidParameter", "AuthSwitch must be on or off")
        if len(changes.get("CallbackURL", "").encode()) > 256:
            raise Refused(400, "InvalidParameter", "CallbackURL is longer than 256 bytes")
        if "AuthKey" in changes and not _valid_auth_key(changes["AuthKey"]):
            raise Refused(
                400,
                "InvalidParameter",
                "AuthKey must be at most 32 characters and mix upper case, lower case and digits",
            )
        self.message_callback.update(changes)
        return {}

    # -- helpers --

    def _api_chance(self, rate: float) -> bool:
        return self.engine.chance(rate, self._api_rng)

    def _request_id(self) -> str:
        h = f"{self._api_rng.getrandbits(128):032X}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class AnswerLost(Exception):
    """The work is done but no answer will be sent (`lose_submit_rate`)."""


async def _close_unanswered(request: web.Request) -> web.StreamResponse:
    """Close the connection without a byte of answer: the caller cannot know what happened."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)  # never reaches the caller: the connection is gone


def _error_response(request: web.Request, request_id: str, refusal: Refused) -> web.Response:
    """VOD's error body (section 1.4)."""
    recommend = f"https://next.api.aliyun.com/troubleshoot?q={refusal.code}&product=vod"
    return web.json_response(
        {
            "RequestId": request_id,
            "HostId": request.host,
            "Code": refusal.code,
            "Message": refusal.message,
            "Recommend": recommend,
        },
        status=refusal.status,
    )


async def _reset_midway(request: web.Request, payload: bytes) -> web.StreamResponse:
    """Start the answer, then drop the connection: the caller cannot know what happened."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.content_length = len(payload)
    await response.prepare(request)
    await response.write(payload[: len(payload) // 2])
    if request.transport is not None:
        request.transport.abort()
    return response


def _valid_auth_key(key: str) -> bool:
    """At most 32 characters mixing upper case, lower case and digits (section 6.1)."""
    return (
        0 < len(key) <= 32
        and any(c.isupper() for c in key)
        and any(c.islower() for c in key)
        and any(c.isdigit() for c in key)
    )
