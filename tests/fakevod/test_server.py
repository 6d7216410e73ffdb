"""The simulator: request verification, processing, callbacks like VOD's, fault injection."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker.config import Settings
from tracker.fakevod import FakeVod, Faults
from tracker.vod import (
    VodClient,
    format_timestamp,
    sign_callback,
    sign_v1,
    sign_v3,
    v3_string_to_sign,
)

AK, SECRET, KEY = "LTAIsimulator", "SimulatorSecret", "CallbackKey123"


@dataclass
class Receiver:
    """A callback endpoint on loopback that answers from a script and records what arrived."""

    url: str = ""
    answers: list[int] = field(default_factory=list)  # statuses to answer, then 200
    stall: float = 0.0
    received: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        self.received.append((request.path, dict(request.headers), body))
        if self.stall:
            await asyncio.sleep(self.stall)
        status = self.answers.pop(0) if self.answers else 200
        if status in (301, 302):
            return web.Response(status=status, headers={"Location": "/elsewhere"})
        return web.Response(status=status, text="ok")

    def events(self, path: str | None = None) -> list[dict[str, Any]]:
        return [body for p, _, body in self.received if path is None or p == path]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    target = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", target.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    target.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield target
    await runner.cleanup()


@pytest.fixture
async def fake(receiver: Receiver) -> AsyncIterator[FakeVod]:
    vod = FakeVod(
        access_key_id=AK,
        access_key_secret=SECRET,
        callback_url=receiver.url + "/vod",
        auth_key=KEY,
        seed=11,
        faults=Faults(delay=0.05, callback_interval=0.05),
    )
    await vod.start()
    yield vod
    await vod.stop()


@pytest.fixture
async def vod(fake: FakeVod) -> AsyncIterator[VodClient]:
    settings = Settings(
        access_key_id=AK,
        access_key_secret=SECRET,  # type: ignore[arg-type]
        vod_endpoint=fake.url,
        vod_rate_limit=1000.0,
    )
    async with VodClient(settings, backoff=0.01) as client:
        yield client


def signed(action: str, secret: str = SECRET, **params: str) -> dict[str, str]:
    values = {
        "Action": action,
        "Version": "2017-03-21",
        "Format": "JSON",
        "AccessKeyId": AK,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": uuid.uuid4().hex,
        "Timestamp": format_timestamp(datetime.now(UTC)),
        **params,
    }
    values["Signature"] = sign_v1("POST", values, secret)
    return values


async def raw(
    fake: FakeVod,
    method: str = "POST",
    query: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, fake.url + "/", params=query, data=form, headers=headers) as response,
    ):
        return response.status, json.loads(await response.read())


# --- request verification ---


async def test_get_with_query_parameters(fake: FakeVod) -> None:
    params = signed("ListAIJob", JobIds="a,b")
    params["Signature"] = sign_v1(
        "GET", {k: v for k, v in params.items() if k != "Signature"}, SECRET
    )
    status, body = await raw(fake, "GET", query=params)
    assert status == 200
    assert body["NonExistAIJobIds"]["String"] == ["a", "b"]
    assert body["RequestId"]


async def test_query_and_form_body_are_merged(fake: FakeVod) -> None:
    params = signed("SubmitAIJob", MediaId="m1", Types="AIVideoTag", SignatureType="")
    query = {k: params.pop(k) for k in ("Action", "Signature", "Timestamp", "SignatureType")}
    status, body = await raw(fake, query=query, form=params)
    assert status == 200, body
    assert body["AIJobList"]["AIJob"][0]["MediaId"] == "m1"


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        (lambda p: p.update(MediaId="other"), 400, "SignatureDoesNotMatch"),
        (lambda p: p.pop("Signature"), 400, "MissingParameter"),
        (lambda p: p.pop("SignatureNonce"), 400, "MissingParameter"),
        (lambda p: p.update(AccessKeyId="LTAIstranger"), 404, "InvalidAccessKeyId.NotFound"),
        (lambda p: p.update(Version="2014-01-01"), 400, "InvalidVersion"),
        (lambda p: p.update(Timestamp="not a time"), 400, "InvalidTimeStamp.Format"),
    ],
)
async def test_bad_requests_get_vod_errors(
    fake: FakeVod, change: Any, status: int, code: str
) -> None:
    params = signed("SubmitAIJob", MediaId="m1", Types="AIVideoTag")
    change(params)
    got, body = await raw(fake, form=params)
    assert (got, body["Code"]) == (status, code)
    assert set(body) >= {"RequestId", "HostId", "Code", "Message", "Recommend"}
    assert fake.jobs == {}


@pytest.mark.parametrize("skew", [timedelta(minutes=-16), timedelta(minutes=16)])
async def test_timestamp_window(fake: FakeVod, skew: timedelta) -> None:
    stamp = format_timestamp(datetime.now(UTC) + skew)
    status, body = await raw(fake, form=signed("ListAIJob", JobIds="a", Timestamp=stamp))
    assert (status, body["Code"]) == (400, "InvalidTimeStamp.Expired")
    inside = format_timestamp(datetime.now(UTC) - timedelta(minutes=14))
    status, _ = await raw(fake, form=signed("ListAIJob", JobIds="a", Timestamp=inside))
    assert status == 200


async def test_nonce_reuse_is_refused(fake: FakeVod) -> None:
    nonce = uuid.uuid4().hex
    # A refused signature does not use up the nonce.
    status, body = await raw(
        fake, form=signed("ListAIJob", "wrong", JobIds="a", SignatureNonce=nonce)
    )
    assert body["Code"] == "SignatureDoesNotMatch"
    assert (await raw(fake, form=signed("ListAIJob", JobIds="a", SignatureNonce=nonce)))[0] == 200
    status, body = await raw(fake, form=signed("ListAIJob", JobIds="b", SignatureNonce=nonce))
    assert (status, body["Code"]) == (400, "SignatureNonceUsed")


async def test_action_parameters_are_checked(fake: FakeVod) -> None:
    cases = [
        (signed("SubmitAIJob", Types="AIVideoTag"), "MissingParameter"),
        (signed("SubmitAIJob", MediaId="m", Types="AIVideoFingerprint"), "InvalidParameter"),
        (signed("SubmitAIJob", MediaId="m", Types="AIVideoTag", Config="{bad"), "InvalidParameter"),
        (
            signed(
                "SubmitAIJob",
                MediaId="m",
                Types="AIMediaDNA",
                UserData=json.dumps({"Extend": "x" * 600}),
            ),
            "InvalidParameter",
        ),
        (signed("ListAIJob", JobIds=",".join(str(i) for i in range(11))), "InvalidParameter"),
        (signed("DeleteEverything"), "InvalidAction.NotFound"),
    ]
    for params, code in cases:
        status, body = await raw(fake, form=params)
        assert body["Code"] == code, params
        assert status in (400, 404)
    assert fake.submit_calls == 0


def v3_headers(action: str, secret: str = SECRET, nonce: str | None = None) -> dict[str, str]:
    payload = hashlib.sha256(b"").hexdigest()
    headers = {
        "x-acs-action": action,
        "x-acs-version": "2017-03-21",
        "x-acs-date": format_timestamp(datetime.now(UTC)),
        "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
        "x-acs-content-sha256": payload,
    }
    return headers


async def v3_call(
    fake: FakeVod, query: dict[str, str], headers: dict[str, str], secret: str = SECRET
) -> tuple[int, dict[str, Any]]:
    host = fake.url.removeprefix("http://")
    signed_headers = {**headers, "host": host}
    signature = sign_v3("POST", "/", query, signed_headers, headers["x-acs-content-sha256"], secret)
    names = ";".join(sorted(signed_headers))
    authorization = f"ACS3-HMAC-SHA256 Credential={AK},SignedHeaders={names},Signature={signature}"
    return await raw(fake, query=query, headers={**headers, "Authorization": authorization})


def test_v3_vector() -> None:
    """The section 4.2 vector, checked from scratch."""
    payload = hashlib.sha256(b"").hexdigest()
    query = {
        "Config": '{"AIVideoTag":{"AnalyseTypes":"ASR,OCR"}}',
        "MediaId": "3D3D12340d9401fab46a0b847abcd",
        "Types": "AIVideoTag",
    }
    headers = {
        "host": "vod.cn-shanghai.aliyuncs.com",
        "x-acs-date": "2024-01-02T03:04:05Z",
        "x-acs-signature-nonce": "0123456789abcdef0123456789abcdef",
        "accept": "application/json",
        "x-acs-credentials-provider": "static_ak",
        "user-agent": "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2",
        "x-acs-action": "SubmitAIJob",
        "x-acs-version": "2017-03-21",
        "x-acs-content-sha256": payload,
    }
    assert v3_string_to_sign("POST", "/", query, headers, payload).endswith(
        "\n87da50bdd96b918144b844f1710f0869aa5cbce1fc475a2d409e70a8d266cb33"
    )
    assert sign_v3("POST", "/", query, headers, payload, "testAccessKeySecret") == (
        "25f19a5a3e574ae2cb29ed16657dfd4544ede1fd0f8c4dc70ba95567eaf883e5"
    )


async def test_v3_requests_are_verified(fake: FakeVod) -> None:
    query = {"MediaId": "m v3", "Types": "AIMediaDNA"}
    nonce = uuid.uuid4().hex
    status, body = await v3_call(fake, query, v3_headers("SubmitAIJob", nonce=nonce))
    assert status == 200, body
    assert fake.submit_calls == 1
    status, body = await v3_call(fake, query, v3_headers("SubmitAIJob", nonce=nonce))
    assert body["Code"] == "SignatureNonceUsed"
    status, body = await v3_call(fake, query, v3_headers("SubmitAIJob"), secret="wrong")
    assert (status, body["Code"]) == (400, "SignatureDoesNotMatch")
    tampered = v3_headers("SubmitAIJob")
    tampered["x-acs-content-sha256"] = "0" * 64
    status, body = await v3_call(fake, query, tampered)
    assert status == 400
    assert fake.submit_calls == 1


# --- processing and results ---


async def test_jobs_move_to_their_outcome(fake: FakeVod, vod: VodClient) -> None:
    fake.faults.delay = 0.4
    result = await vod.submit_ai_job("m1", ["AIVideoTag"])
    job_id = result.jobs[0].job_id
    assert fake.jobs[job_id].status == "init"
    await asyncio.sleep(0.2)
    assert (await vod.list_ai_jobs([job_id])).jobs[0].status == "processing"
    await fake.idle(5)
    done = (await vod.list_ai_jobs([job_id])).jobs[0]
    assert done.status == "success"
    assert done.code == "0"
    assert done.complete_time is not None
    assert done.creation_time is not None
    assert done.complete_time >= done.creation_time


async def test_fail_rate(fake: FakeVod, vod: VodClient, receiver: Receiver) -> None:
    fake.faults.fail_rate = 1.0
    result = await vod.submit_ai_job("m1", ["AIMediaDNA"])
    await fake.idle(5)
    job = fake.jobs[result.jobs[0].job_id]
    assert job.status == "fail"
    [event] = receiver.events()
    assert event["Status"] == "fail"
    assert event["Code"] == job.code != "0"
    assert event["Data"] == ""
    assert (await vod.list_ai_jobs([job.job_id])).jobs[0].status == "fail"
    assert await vod.get_media_dna_result("m1") == {}


async def test_same_seed_same_story(receiver: Receiver) -> None:
    async def story(seed: int, polls: int) -> list[tuple[str, str, str]]:
        fake = FakeVod(
            access_key_id=AK,
            access_key_secret=SECRET,
            seed=seed,
            faults=Faults(delay=0.01, fail_rate=0.5),
        )
        await fake.start()
        try:
            settings = Settings(
                access_key_id=AK,
                access_key_secret=SECRET,  # type: ignore[arg-type]
                vod_endpoint=fake.url,
                vod_rate_limit=1000.0,
            )
            async with VodClient(settings) as client:
                for n in range(5):
                    await client.submit_ai_job(f"m{n}", ["AIVideoTag", "AIMediaDNA"])
                    # Polling, however often, does not change the story.
                    for _ in range(polls * n):
                        await client.list_ai_jobs(["x"])
            await fake.idle(5)
            return [(j.job_id, j.status, j.data) for j in fake.jobs.values()]
        finally:
            await fake.stop()

    first, again, other = await story(5, 0), await story(5, 2), await story(6, 0)
    assert first == again
    assert first != other
    assert {status for _, status, _ in first} == {"success", "fail"}


# --- callbacks ---


async def test_events_are_signed_like_vod(
    fake: FakeVod, vod: VodClient, receiver: Receiver
) -> None:
    result = await vod.submit_ai_job(
        "media-9", ["AIVideoTag", "AIMediaDNA"], user_data={"Extend": {"ref": "r9"}}
    )
    await fake.idle(5)
    assert len(receiver.received) == 2
    for path, headers, body in receiver.received:
        assert path == "/vod"
        stamp = int(headers["X-VOD-TIMESTAMP"])
        assert abs(stamp - time.time()) < 60
        # Computed by hand as section 6.4 says, not with the helper under test.
        by_hand = hashlib.md5(f"{receiver.url}/vod|{stamp}|{KEY}".encode()).hexdigest()
        assert headers["X-VOD-SIGNATURE"] == by_hand
        assert headers["Content-Type"] == "application/json"
        assert body["MediaId"] == "media-9"
        assert body["Status"] == "success"
        assert isinstance(body["Data"], str)
        assert json.loads(body["Data"])
        assert json.loads(body["Extend"]) == {"ref": "r9"}
        assert datetime.strptime(body["EventTime"], "%Y-%m-%dT%H:%M:%SZ")
    by_type = {b["EventType"]: b for b in receiver.events()}
    assert set(by_type) == {"AIVideoTagComplete", "AIMediaDNAComplete"}
    assert {b["JobId"] for b in by_type.values()} == {j.job_id for j in result.jobs}
    assert "CompleteTime" in by_type["AIMediaDNAComplete"]


async def test_unsigned_without_auth_key(fake: FakeVod, vod: VodClient, receiver: Receiver) -> None:
    fake.auth_key = None
    await vod.submit_ai_job("m", ["AIVideoTag"])
    await fake.idle(5)
    [(_, headers, _)] = receiver.received
    assert "X-VOD-SIGNATURE" not in headers
    assert "X-VOD-TIMESTAMP" not in headers


async def test_per_request_callback_url_wins(
    fake: FakeVod, vod: VodClient, receiver: Receiver
) -> None:
    own = receiver.url + "/mine"
    await vod.submit_ai_job(
        "m", ["AIVideoTag"], user_data={"MessageCallback": {"CallbackURL": own}}
    )
    # The older doc form: MessageCallback as a JSON string.
    await vod.submit_ai_job(
        "m2",
        ["AIVideoTag"],
        user_data={"MessageCallback": json.dumps({"CallbackURL": own, "CallbackType": "http"})},
    )
    await fake.idle(5)
    assert [p for p, _, _ in receiver.received] == ["/mine", "/mine"]
    _, headers, _ = receiver.received[0]
    stamp = int(headers["X-VOD-TIMESTAMP"])
    assert headers["X-VOD-SIGNATURE"] == sign_callback(own, stamp, KEY)


async def test_set_message_callback_redirects_events(
    fake: FakeVod, vod: VodClient, receiver: Receiver
) -> None:
    await vod.set_message_callback(CallbackURL=receiver.url + "/new", AuthKey="NewKey456")
    await vod.submit_ai_job("m", ["AIMediaDNA"])
    await fake.idle(5)
    [(path, headers, _)] = receiver.received
    assert path == "/new"
    stamp = int(headers["X-VOD-TIMESTAMP"])
    assert headers["X-VOD-SIGNATURE"] == sign_callback(receiver.url + "/new", stamp, "NewKey456")

    await vod.set_message_callback(EventTypeList="FileUploadComplete")
    result = await vod.submit_ai_job("m", ["AIMediaDNA"])
    await fake.idle(5)
    assert len(receiver.received) == 1  # AI events are no longer subscribed
    assert result.jobs[0].job_id in fake.dropped


async def test_set_message_callback_validates(vod: VodClient) -> None:
    from tracker.vod import VodError

    with pytest.raises(VodError, match="AuthKey"):
        await vod.set_message_callback(AuthKey="alllowercase")
    with pytest.raises(VodError, match="CallbackType"):
        await vod.set_message_callback(CallbackType="SMTP")


async def test_only_200_counts_and_three_attempts(
    fake: FakeVod, vod: VodClient, receiver: Receiver
) -> None:
    receiver.answers = [500, 204]
    result = await vod.submit_ai_job("m", ["AIVideoTag"])
    await fake.idle(5)
    job = fake.jobs[result.jobs[0].job_id]
    assert [d.status for d in fake.deliveries] == [500, 204, 200]
    assert (job.attempts, job.acknowledged) == (3, 1)
    assert fake.dropped == []


async def test_event_dropped_after_three_failures(
    fake: FakeVod, vod: VodClient, receiver: Receiver
) -> None:
    receiver.answers = [503, 302, 500, 200]
    result = await vod.submit_ai_job("m", ["AIVideoTag"])
    await fake.idle(5)
    job_id = result.jobs[0].job_id
    assert [d.status for d in fake.deliveries] == [503, 302, 500]  # the redirect not followed
    assert fake.dropped == [job_id]
    assert [p for p, _, _ in receiver.received] == ["/vod"] * 3
    # The job itself finished: reconciliation can still learn it.
    assert (await vod.list_ai_jobs([job_id])).jobs[0].status == "success"


async def test_callback_timeout(fake: FakeVod, vod: VodClient, receiver: Receiver) -> None:
    fake.faults.callback_timeout = 0.1
    receiver.stall = 0.3
    await vod.submit_ai_job("m", ["AIVideoTag"])
    await fake.idle(5)
    assert [d.error for d in fake.deliveries] == ["TimeoutError"] * 3
    assert len(fake.dropped) == 1


async def test_drop_and_duplicate_faults(fake: FakeVod, vod: VodClient, receiver: Receiver) -> None:
    fake.faults.drop_rate = 1.0
    dropped = await vod.submit_ai_job("m1", ["AIVideoTag"])
    fake.faults.drop_rate, fake.faults.duplicate_rate = 0.0, 1.0
    doubled = await vod.submit_ai_job("m2", ["AIVideoTag"])
    await fake.idle(5)
    assert fake.dropped == [dropped.jobs[0].job_id]
    assert [b["JobId"] for b in receiver.events()] == [doubled.jobs[0].job_id] * 2
    assert fake.jobs[doubled.jobs[0].job_id].acknowledged == 2


async def test_late_delivery_arrives_out_of_order(
    fake: FakeVod, vod: VodClient, receiver: Receiver
) -> None:
    fake.faults.late_rate, fake.faults.late_seconds = 1.0, 0.5
    late = await vod.submit_ai_job("m1", ["AIVideoTag"])
    fake.faults.late_rate = 0.0
    fake.faults.delay = 0.2
    prompt = await vod.submit_ai_job("m2", ["AIVideoTag"])
    await fake.idle(5)
    order = [b["JobId"] for b in receiver.events()]
    assert order == [prompt.jobs[0].job_id, late.jobs[0].job_id]
    late_job = fake.jobs[late.jobs[0].job_id]
    prompt_job = fake.jobs[prompt.jobs[0].job_id]
    assert late_job.complete_time is not None
    assert prompt_job.complete_time is not None
    assert late_job.complete_time < prompt_job.complete_time


async def test_unsolicited_dna_events(fake: FakeVod, vod: VodClient, receiver: Receiver) -> None:
    fake.faults.unsolicited_rate = 1.0
    result = await vod.submit_ai_job("m1", ["AIVideoTag"])
    job = fake.emit_unsolicited("uploaded-media")
    await fake.idle(5)
    strangers = [j for j in fake.jobs.values() if not j.submitted]
    assert len(strangers) == 2
    assert job in strangers
    assert all(j.type == "AIMediaDNA" for j in strangers)
    assert fake.submit_calls == 1
    events = {b["JobId"]: b for b in receiver.events()}
    assert set(events) == {result.jobs[0].job_id, *(j.job_id for j in strangers)}
    assert events[job.job_id]["EventType"] == "AIMediaDNAComplete"
    assert events[job.job_id]["MediaId"] == "uploaded-media"


async def test_replicas_are_called_alternately(
    fake: FakeVod, vod: VodClient, receiver: Receiver
) -> None:
    fake.extra_callback_urls = [receiver.url + "/replica-b"]
    receiver.answers = [500]  # the first replica fails once: the retry goes to the other
    await vod.submit_ai_job("m", ["AIVideoTag"])
    await fake.idle(5)
    await vod.submit_ai_job("m", ["AIVideoTag"])
    await fake.idle(5)
    assert [p for p, _, _ in receiver.received] == ["/vod", "/replica-b", "/vod"]
    for path, headers, _ in receiver.received:
        stamp = int(headers["X-VOD-TIMESTAMP"])
        assert headers["X-VOD-SIGNATURE"] == sign_callback(receiver.url + path, stamp, KEY)


async def test_idle_times_out_while_busy(fake: FakeVod, vod: VodClient) -> None:
    fake.faults.delay = 2.0
    await vod.submit_ai_job("m", ["AIVideoTag"])
    with pytest.raises(TimeoutError, match="busy"):
        await fake.idle(0.1)


async def test_stop_with_work_in_flight(vod: VodClient, fake: FakeVod) -> None:
    fake.faults.delay = 5.0
    await vod.submit_ai_job("m", ["AIVideoTag"])
    await fake.stop()
    assert fake.jobs  # the truth survives stopping


async def test_exact_counts_for_demos(fake: FakeVod, vod: VodClient, receiver: Receiver) -> None:
    fake.faults.drop_next, fake.faults.stuck_seconds = 1, 30.0
    dropped = await vod.submit_ai_job("m1", ["AIVideoTag"])
    fake.faults.stuck_next = 1
    stuck = await vod.submit_ai_job("m2", ["AIVideoTag"])
    normal = await vod.submit_ai_job("m3", ["AIVideoTag"])
    with pytest.raises(TimeoutError):
        await fake.idle(1)
    assert fake.jobs[stuck.jobs[0].job_id].status == "processing"
    assert fake.jobs[dropped.jobs[0].job_id].status == "success"
    assert fake.dropped == [dropped.jobs[0].job_id]
    assert [b["JobId"] for b in receiver.events()] == [normal.jobs[0].job_id]
    assert (fake.faults.drop_next, fake.faults.stuck_next) == (0, 0)


@pytest.fixture(scope="module")
def threaded_fake() -> Iterator[FakeVod]:
    """A simulator on its own loop in a thread, for synchronous (hypothesis) tests."""
    loop = asyncio.new_event_loop()
    fake = FakeVod(access_key_id=AK, access_key_secret=SECRET, faults=Faults(delay=0.01))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
    yield fake
    asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    action=st.sampled_from(
        [
            "SubmitAIJob",
            "ListAIJob",
            "GetAIVideoTagResult",
            "GetMediaDNAResult",
            "SetMessageCallback",
            "Nope",
            "",
        ]
    ),
    params=st.dictionaries(
        st.sampled_from(
            [
                "MediaId",
                "Types",
                "Config",
                "UserData",
                "JobIds",
                "AuthKey",
                "CallbackType",
                "AuthSwitch",
                "CallbackURL",
                "Timestamp",
            ]
        ),
        text,
        max_size=5,
    ),
    sign=st.booleans(),
    method=st.sampled_from(["GET", "POST"]),
)
def test_no_input_makes_it_fail_like_a_bug(
    threaded_fake: FakeVod, action: str, params: dict[str, str], sign: bool, method: str
) -> None:
    values = signed(action, **params) if sign else {"Action": action, **params}
    if sign:
        values.pop("Signature")
        values["Signature"] = sign_v1(method, values, SECRET)
    where = {"params": values} if method == "GET" else {"data": values}
    response = httpx.request(method, threaded_fake.url + "/", timeout=10, **where)
    assert response.status_code in (200, 400, 403, 404), response.text
    body = response.json()
    assert body["RequestId"]
    if response.status_code != 200:
        assert body["Code"] != "InternalError"
