"""The simulator itself: serves the API, runs the jobs, delivers the events, injects faults.

Held to ../shared/vod-reference.md: it verifies requests the way the gateway does (section 4),
answers with VOD's bodies and error shapes (sections 1-3) and delivers events like VOD (section 6).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from tracker.clock import Clock, utcnow
from tracker.fakevod.gateway import Gateway, Refused, required
from tracker.fakevod.jobs import Delivery, FakeJob, draw_result, json_param, user_data_fields
from tracker.fakevod.mns import FakeMns
from tracker.vod import JOB_TYPES, LIST_LIMIT, sign_callback

log = logging.getLogger(__name__)

APP_ID = "app-1000000"
JOB_KINDS = ("transcode", "snapshot", "ai")  # ListJobInfo's JobType (joblookup 1)


class FakeVod:
    """The simulator. Fault attributes may be changed while it runs; `jobs` is the truth."""

    def __init__(
        self,
        *,
        access_key_id: str,
        access_key_secret: str,
        callback_url: str | None = None,
        auth_key: str | None = None,
        delay: float = 2.0,
        fail_rate: float = 0.0,
        drop_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        qps: float | None = None,
        seed: int | None = None,
        late_rate: float = 0.0,
        late_seconds: float = 3.0,
        stuck_rate: float = 0.0,
        stuck_seconds: float = 600.0,
        slow_rate: float = 0.0,
        slow_seconds: float = 15.0,
        error_rate: float = 0.0,
        reset_rate: float = 0.0,
        lose_submit_rate: float = 0.0,
        unsolicited_rate: float = 0.0,
        extra_callback_urls: list[str] | None = None,
        callback_attempts: int = 3,
        callback_interval: float = 1.0,
        callback_timeout: float = 5.0,
        sts_ttl: float | None = None,
        mns_queue: str | None = None,
    ) -> None:
        # sts_ttl: GET /credentials hands out STS credentials living this many seconds.
        self.gateway = Gateway(access_key_id, access_key_secret, qps, sts_ttl=sts_ttl)
        # MNS's queue API, on a port of its own, with the same key pair (mns-reference.md 9).
        self.mns = FakeMns(access_key_id, access_key_secret, seed=seed)
        self.mns_queue = mns_queue
        self.delay = delay
        self.fail_rate = fail_rate
        self.drop_rate = drop_rate
        self.duplicate_rate = duplicate_rate
        self.late_rate = late_rate
        self.late_seconds = late_seconds
        self.stuck_rate = stuck_rate
        self.stuck_seconds = stuck_seconds
        # Exact counts for demos: the next N jobs created drop their event / get stuck.
        self.drop_next = 0
        self.stuck_next = 0
        # The jobs' CreateTime and CompleteTime; tests may share their injected clock. Signatures
        # are always checked against the wall clock, as VOD's gateway does.
        self.clock: Clock = utcnow
        self.user_id = 1_391_090_000_849_30  # UserId of ListJobInfo and GetJobDetail (an int)
        self.slow_rate = slow_rate
        self.slow_seconds = slow_seconds
        self.error_rate = error_rate
        self.reset_rate = reset_rate
        # SubmitAIJob creates the jobs, then the connection closes before any answer: the lost
        # answer that `tracker.scheduler.recover` looks for with ListJobInfo.
        self.lose_submit_rate = lose_submit_rate
        self.lose_submit_next = 0
        self.lost_submits = 0
        self.unsolicited_rate = unsolicited_rate
        self.extra_callback_urls = list(extra_callback_urls or [])
        self.callback_attempts = callback_attempts
        self.callback_interval = callback_interval
        self.callback_timeout = callback_timeout
        # Two streams, so that how often the tracker polls cannot change which jobs fail.
        self.rng = random.Random(seed)  # jobs: ids, outcomes, results, delivery faults
        self._api_rng = random.Random(None if seed is None else f"api-{seed}")
        self.message_callback: dict[str, str] = {
            "AppId": APP_ID,
            "CallbackType": "HTTP",
            "CallbackURL": callback_url or "",
            "AuthSwitch": "on" if auth_key else "off",
            "AuthKey": auth_key or "",
            # As if the operator ticked "Video AI processing completed" (section 6.1).
            "EventTypeList": "AIComplete",
            "MnsEndpoint": "",
            "MnsQueueName": "",
        }
        self.jobs: dict[str, FakeJob] = {}
        self.oidc_tokens: list[str] = []  # as AssumeRoleWithOIDC received them
        self.submit_calls = 0
        self.requests = 0
        self.refused: dict[str, int] = {}  # error code -> how many answers carried it
        self.deliveries: list[Delivery] = []
        self.dropped: list[str] = []  # job ids whose event was never acknowledged
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._round_robin = 0
        self._delivery_slots = asyncio.Semaphore(64)  # below aiohttp's pool of 100
        self.url = ""

    # -- runtime knobs --

    @property
    def access_key_id(self) -> str:
        return self.gateway.access_key_id

    @property
    def qps(self) -> float | None:
        return self.gateway.qps

    @qps.setter
    def qps(self, value: float | None) -> None:
        self.gateway.qps = value

    @property
    def callback_url(self) -> str | None:
        return self.message_callback["CallbackURL"] or None

    @callback_url.setter
    def callback_url(self, value: str | None) -> None:
        self.message_callback["CallbackURL"] = value or ""

    @property
    def auth_key(self) -> str | None:
        on = self.message_callback["AuthSwitch"] == "on"
        return (self.message_callback["AuthKey"] or None) if on else None

    @auth_key.setter
    def auth_key(self, value: str | None) -> None:
        self.message_callback.update(AuthKey=value or "", AuthSwitch="on" if value else "off")

    def __repr__(self) -> str:
        return f"FakeVod(url={self.url!r}, access_key_id={self.access_key_id!r})"

    # -- lifecycle --

    async def start(self, host: str = "127.0.0.1", port: int = 0, mns_port: int = 0) -> str:
        await self.mns.start(host, mns_port)
        if self.mns_queue is not None:  # as if SetMessageCallback had aimed events at it (6.7)
            self.mns.create_queue(self.mns_queue)
            self.message_callback.update(
                CallbackType="MNS", MnsEndpoint=self.mns.url, MnsQueueName=self.mns_queue
            )
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/", self._handle)
        app.router.add_get("/credentials", self._credentials)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
        self.url = f"http://{shown}:{bound[1]}"
        self._http = aiohttp.ClientSession()
        return self.url

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        await self.mns.stop()

    async def __aenter__(self) -> FakeVod:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def idle(self, timeout: float) -> None:  # noqa: ASYNC109 - the agreed interface
        """Wait until every job finished and every delivery ended; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while self._tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"fake VOD still busy: {len(self._tasks)} tasks")
            await asyncio.wait(set(self._tasks), timeout=remaining)

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
        if self._chance(self.slow_rate, self._api_rng):
            # The work is done; answering late lets the caller time out after the fact.
            await asyncio.sleep(self.slow_seconds)
        payload = json.dumps(body).encode()
        if self._chance(self.reset_rate, self._api_rng):
            return await _reset_midway(request, payload)
        return web.Response(body=payload, content_type="application/json")

    async def _answer(self, request: web.Request) -> dict[str, Any]:
        if request.query.get("Action") == "AssumeRoleWithOIDC":
            return self._assume_role_with_oidc(request.query)
        action, params = await self.gateway.authenticate(request)
        self.gateway.throttle()
        if self._chance(self.error_rate, self._api_rng):
            raise Refused(
                500, "InternalError", "The request processing has failed due to some unknown error."
            )
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
        self.submit_calls += 1
        jobs = [self._create(media_id, t, callback_url, extend) for t in dict.fromkeys(types)]
        if self._chance(self.unsolicited_rate):
            self.emit_unsolicited()
        if self._take_next("lose_submit_next") or self._chance(
            self.lose_submit_rate, self._api_rng
        ):
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

    def _create(
        self, media_id: str, job_type: str, callback_url: str | None, extend: str | None
    ) -> FakeJob:
        job = FakeJob(
            creation_time=self.clock(),
            job_id=self._hex(),
            media_id=media_id,
            type=job_type,
            callback_url=callback_url,
            extend=extend,
            will_fail=self._chance(self.fail_rate),
            drop=self._chance(self.drop_rate) or self._take_next("drop_next"),
            duplicate=self._chance(self.duplicate_rate),
            late=self._chance(self.late_rate),
            stuck=self._chance(self.stuck_rate) or self._take_next("stuck_next"),
        )
        job.data = draw_result(self.rng, job_type)  # drawn now so --seed fixes it
        self.jobs[job.job_id] = job
        self._spawn(self._run(job))
        return job

    def emit_unsolicited(self, media_id: str | None = None) -> FakeJob:
        """A DNA job nobody submitted, as VOD runs after each upload (section 7)."""
        job = self._create(media_id or self._hex(), "AIMediaDNA", None, None)
        job.submitted = False
        return job

    async def _run(self, job: FakeJob) -> None:
        await asyncio.sleep(self.delay * 0.25)
        job.status = "processing"
        await asyncio.sleep(self.delay * 0.75 + (self.stuck_seconds if job.stuck else 0.0))
        job.complete_time = self.clock()
        if job.will_fail:
            # No failed AI event is published (section 6.2 [U]): a plausible code, empty Data.
            job.status, job.code, job.message, job.data = (
                "fail",
                "InternalError",
                "The AI job failed.",
                "",
            )
        else:
            job.status, job.code, job.message = "success", "0", "OK"
        if job.drop:
            self.dropped.append(job.job_id)
            return
        if job.late:
            await asyncio.sleep(self.late_seconds)
        delivered = await self._deliver(job)
        if delivered and job.duplicate:
            self._spawn(self._deliver_again(job))

    async def _deliver_again(self, job: FakeJob) -> None:
        await asyncio.sleep(self.callback_interval)
        await self._deliver(job)

    def _subscribed(self, job: FakeJob) -> bool:
        events = {e.strip() for e in self.message_callback["EventTypeList"].split(",")}
        return bool(events & {"ALL", "AIComplete", job.event_type})

    def _targets(self, job: FakeJob) -> list[str]:
        config = self.message_callback
        if config["CallbackType"].upper() != "HTTP" or not self._subscribed(job):
            return []
        if job.callback_url:
            return [job.callback_url]
        return [u for u in [config["CallbackURL"], *self.extra_callback_urls] if u]

    async def _deliver(self, job: FakeJob) -> bool:
        """Up to `callback_attempts` POSTs, `callback_interval` apart; only 200 counts (6.5).
        With CallbackType MNS, the event is written to the queue instead (6.7)."""
        if self.message_callback["CallbackType"].upper() == "MNS" and not job.callback_url:
            return await self._write_to_queue(job)
        targets = self._targets(job)
        if not targets or self._http is None:
            self.dropped.append(job.job_id)
            return False
        body = json.dumps(job.event()).encode()
        for attempt in range(1, self.callback_attempts + 1):
            url = targets[self._round_robin % len(targets)]
            self._round_robin += 1
            headers = {"Content-Type": "application/json"}
            if (key := self.auth_key) is not None:
                stamp = int(time.time())
                headers["X-VOD-TIMESTAMP"] = str(stamp)
                headers["X-VOD-SIGNATURE"] = sign_callback(url, stamp, key)
            job.attempts += 1
            try:
                # The 5 s timeout is VOD's per request: waiting for a free slot does not count.
                async with (
                    self._delivery_slots,
                    self._http.post(
                        url,
                        data=body,
                        headers=headers,
                        allow_redirects=False,
                        timeout=aiohttp.ClientTimeout(total=self.callback_timeout),
                    ) as response,
                ):
                    status = response.status
                self.deliveries.append(Delivery(job.job_id, url, attempt, status))
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = None
                self.deliveries.append(Delivery(job.job_id, url, attempt, None, type(exc).__name__))
            if status == 200:
                job.acknowledged += 1
                return True
            if attempt < self.callback_attempts:
                await asyncio.sleep(self.callback_interval)
        log.info("callback for %s dropped after %d attempts", job.job_id, self.callback_attempts)
        self.dropped.append(job.job_id)
        return False

    async def _write_to_queue(self, job: FakeJob) -> bool:
        """VOD writes the event's JSON, raw, to the queue; a failed write is retried twice, 1 s
        apart, then the event is dropped (vod-reference.md 6.7, mns-reference.md 7.2). Only the
        simulator's own queue service is ever written to, whatever MnsEndpoint names."""
        queue = self.message_callback["MnsQueueName"]
        if not queue or not self._subscribed(job):
            self.dropped.append(job.job_id)
            return False
        body = json.dumps(job.event())
        target = f"mns:{queue}"
        for attempt in range(1, 4):
            job.attempts += 1
            if await self.mns.put(queue, [body]):
                self.deliveries.append(Delivery(job.job_id, target, attempt, 201))
                job.acknowledged += 1
                return True
            self.deliveries.append(Delivery(job.job_id, target, attempt, None, "QueueNotExist"))
            if attempt < 3:
                await asyncio.sleep(self.callback_interval)
        log.info("MNS write for %s dropped: queue %r does not exist", job.job_id, queue)
        self.dropped.append(job.job_id)
        return False

    # -- helpers --

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take_next(self, counter: str) -> bool:
        left = int(getattr(self, counter))
        if left > 0:
            setattr(self, counter, left - 1)
        return left > 0

    def _chance(self, rate: float, rng: random.Random | None = None) -> bool:
        return rate > 0 and (rng or self.rng).random() < rate

    def _hex(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

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


def run_fake_vod(
    host: str,
    port: int,
    *,
    callback_urls: list[str],
    auth_key: str | None,
    mns_port: int = 0,
    **options: Any,
) -> None:
    """`tracker fake-vod`: serve until Ctrl-C or SIGTERM."""
    import signal

    async def serve() -> None:
        fake = FakeVod(
            callback_url=callback_urls[0] if callback_urls else None,
            extra_callback_urls=callback_urls[1:],
            auth_key=auth_key,
            **options,
        )
        url = await fake.start(host, port, mns_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        targets = ", ".join(callback_urls) or "nowhere until SetMessageCallback or UserData"
        signed = "signed with the AuthKey" if auth_key else "unsigned"
        if fake.mns_queue:  # MNS messages carry no signature (vod-reference.md 6.7)
            targets, signed = f"MNS queue {fake.mns_queue} at {fake.mns.url}", "unsigned, as VOD's"
        faults = ", ".join(
            f"{k}={v}" for k, v in options.items() if k.endswith("rate") and v or k == "qps" and v
        )
        print(  # noqa: T201 - the startup line operators look for
            f"fake VOD listening on {url} (AccessKeyId {fake.access_key_id}); "
            f"callbacks to {targets} ({signed}); MNS queue API on {fake.mns.url}; "
            f"delay {fake.delay}s"
            + (f"; faults: {faults}" if faults else "")
            + (f"; seed {options['seed']}" if options.get("seed") is not None else "")
            + (
                f"; STS credentials at {fake.credentials_uri} for {options['sts_ttl']:g}s each"
                if options.get("sts_ttl")
                else ""
            ),
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            await fake.stop()
            log.info(
                "fake VOD stopped: %d submits, %d jobs, %d deliveries, %d events dropped",
                fake.submit_calls,
                len(fake.jobs),
                len(fake.deliveries),
                len(fake.dropped),
            )

    asyncio.run(serve())
