"""The VOD client: signing vectors, parsing, errors, retries and secrecy, against the simulator."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from tracker.config import Settings
from tracker.context import context_of
from tracker.fakevod import FakeVod, Faults
from tracker.scheduler.verdicts import status_outcome
from tracker.vod import (
    AIJobStatus,
    RateLimiter,
    VodClient,
    VodClients,
    VodError,
    VodOutcomeUnknown,
    VodThrottled,
    VodUnreachable,
    canonical_query,
    parse_vod_time,
    sign_callback,
    sign_v1,
    string_to_sign,
)

AK, SECRET, TOKEN = "testAccessKeyId", "testAccessKeySecret", "sts-Token/with+odd=chars"

# --- section 4.1 vectors ---

COMMON = {
    "AccessKeyId": "testAccessKeyId",
    "Timestamp": "2024-01-02T03:04:05Z",
    "SignatureNonce": "3f2b6c1e-0000-4000-8000-000000000001",
    "Format": "JSON",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureVersion": "1.0",
    "Version": "2017-03-21",
}
VECTOR_1 = {
    **COMMON,
    "Action": "SubmitAIJob",
    "MediaId": "3D3D12340d9401fab46a0b847abcd",
    "Types": "AIVideoTag",
    "Config": '{"AIVideoTag":{"AnalyseTypes":"ASR,OCR"}}',
    "UserData": '{"MessageCallback":{"CallbackURL":"http://127.0.0.1:8080/vod/callback",'
    '"CallbackType":"http"},"Extend":{"jobRef":"job-42","note":"a b*c~"}}',
}
VECTOR_2 = {
    **COMMON,
    "Action": "SubmitAIJob",
    "MediaId": "a718a3a1e8bb42ee3bc88921e9000000",
    "Types": "AIMediaDNA",
    "Config": '{"AIMediaDNA":{"DNADBId":"2288c6ca184c0e47098a5b665e2a12****"}}',
    "UserData": '{"Extend":{"title":"测试 video"}}',
}
VECTOR_3 = {
    **COMMON,
    "Action": "ListAIJob",
    "JobIds": "9e82640c85114bf5af23edfaf0001,53d4a9c7b00ccdcb4b0c2c854c70002",
}


@pytest.mark.parametrize(
    ("method", "params", "plain", "with_signature_type"),
    [
        ("POST", VECTOR_1, "lLTecJCeA4ZnnMtfZAvX1CnnV00=", "IyNpUTHgrsmAUZw6ZJ5kbdUds+I="),
        ("GET", VECTOR_2, "EZcKYDi8lbnVuBmFXJAA7La7B3g=", "raxekxwgrCbBvtPmaR22wzOge3s="),
        ("POST", VECTOR_3, "JVJqfFzKegBn6kII03+qotz5QSw=", "Afll09dmuahk1L0BklgNrWlEYEk="),
    ],
)
def test_v1_vectors(
    method: str, params: dict[str, str], plain: str, with_signature_type: str
) -> None:
    assert sign_v1(method, params, "testAccessKeySecret") == plain
    assert sign_v1(method, {**params, "SignatureType": ""}, "testAccessKeySecret") == (
        with_signature_type
    )
    # The Signature parameter itself never takes part.
    assert sign_v1(method, {**params, "Signature": "x"}, "testAccessKeySecret") == plain


def test_vector_1_canonical_forms() -> None:
    query = canonical_query(VECTOR_1)
    assert "Timestamp=2024-01-02T03%3A04%3A05Z" in query
    assert "%22a%20b%2Ac~%22" in query  # space %20, * %2A, ~ kept
    assert string_to_sign("POST", VECTOR_1).startswith(
        "POST&%2F&AccessKeyId%3DtestAccessKeyId%26Action%3DSubmitAIJob%26Config%3D%257B%2522"
    )


def test_sign_callback_doc_example() -> None:
    url = "https://www.example.com/your/callback"
    assert sign_callback(url, 1519375990, "test123") == "c72b60894140fa98920f1279219b7ed4"
    # The trap of section 6.4: the capitalised key gives a different hash.
    assert sign_callback(url, 1519375990, "Test123") == "c587b80d2d0ede300e8967937da7219b"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-06-28T02:04:32Z", datetime(2020, 6, 28, 2, 4, 32, tzinfo=UTC)),
        ("2017-03-20T07:49:17:025Z", datetime(2017, 3, 20, 7, 49, 17, 25000, tzinfo=UTC)),
        ("2017-03-20T07:49:17.5Z", datetime(2017, 3, 20, 7, 49, 17, 500000, tzinfo=UTC)),
        ("2017-03-20T15:49:17+08:00", datetime(2017, 3, 20, 7, 49, 17, tzinfo=UTC)),
        ("yesterday", None),
        ("2017-13-40T00:00:00Z", None),
        (None, None),
    ],
)
def test_parse_vod_time(text: str | None, expected: datetime | None) -> None:
    assert parse_vod_time(text) == expected


def test_job_status_parsing_is_lenient() -> None:
    status = AIJobStatus.from_vod(
        {
            "JobId": "j1",
            "MediaId": "m1",
            "Type": "AIVideoTag",
            "Status": "Processing",
            "Data": "",
            "CreationTime": "2020-06-28T02:04:32Z",
        }
    )
    assert status.status == "processing"
    assert status.data is None
    assert status_outcome(status).event_time == datetime(2020, 6, 28, 2, 4, 32, tzinfo=UTC)
    done = AIJobStatus.from_vod(
        {
            "JobId": "j1",
            "Type": "AIMediaDNA",
            "Status": "success",
            "Code": "0",
            "Data": '{"VideoDNA":[]}',
            "CreationTime": "2020-06-28T02:04:32Z",
            "CompleteTime": "2020-06-28T02:04:47Z",
        }
    )
    outcome = status_outcome(done)
    assert outcome.data == {"VideoDNA": []}
    assert outcome.event_time == outcome.completed_at == done.complete_time
    assert outcome.media_id is None


async def test_rate_limiter_hands_out_evenly_spaced_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(round(seconds, 6))

    monkeypatch.setattr("tracker.vod.client.time.monotonic", lambda: now[0])
    monkeypatch.setattr("tracker.vod.client.asyncio.sleep", sleep)
    limiter = RateLimiter(4.0)
    await asyncio.gather(*(limiter.acquire() for _ in range(4)))
    assert waits == [0.25, 0.5, 0.75]  # the first goes at once
    now[0] += 10  # idle time does not bank a burst
    waits.clear()
    await asyncio.gather(*(limiter.acquire() for _ in range(2)))
    assert waits == [0.25]
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)


# --- against the simulator ---


def settings_for(url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "access_key_id": AK,
        "access_key_secret": SECRET,
        "vod_endpoint": url,
        "vod_rate_limit": 1000.0,
        "vod_retries": 3,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def fake() -> AsyncIterator[FakeVod]:
    vod = FakeVod(access_key_id=AK, access_key_secret=SECRET, seed=7, faults=Faults(delay=0.05))
    await vod.start()
    yield vod
    await vod.stop()


@pytest.fixture
async def vod(fake: FakeVod) -> AsyncIterator[VodClient]:
    async with VodClient(settings_for(fake.url), backoff=0.01) as client:
        yield client


def counted(action: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "tracker_vod_calls_total", {"action": action, "outcome": outcome}
    )
    return value or 0.0


async def test_submit_and_list(fake: FakeVod, vod: VodClient) -> None:
    ok_before = counted("SubmitAIJob", "ok")
    result = await vod.submit_ai_job(
        "media-1",
        ["AIVideoTag", "AIMediaDNA"],
        config={"AIVideoTag": {"AnalyseTypes": "ASR,OCR"}},
        user_data={"Extend": {"ref": "r1"}},
    )
    assert [j.type for j in result.jobs] == ["AIVideoTag", "AIMediaDNA"]
    assert {j.job_id for j in result.jobs} == set(fake.jobs)
    assert fake.submit_calls == 1
    assert counted("SubmitAIJob", "ok") == ok_before + 1

    await fake.idle(5)
    listed = await vod.list_ai_jobs([*(j.job_id for j in result.jobs), "no-such-job"])
    assert listed.missing == ["no-such-job"]
    by_id = {j.job_id: j for j in listed.jobs}
    for job in result.jobs:
        truth = fake.jobs[job.job_id]
        assert by_id[job.job_id].status == truth.status == "success"
        assert by_id[job.job_id].media_id == "media-1"
        assert by_id[job.job_id].complete_time is not None
    tag = by_id[result.jobs[0].job_id]
    assert tag.data == await vod.get_ai_video_tag_result("media-1")
    assert "Keyword" in tag.data
    dna = await vod.get_media_dna_result("media-1")
    assert "VideoDNA" in dna


async def test_list_takes_at_most_ten(vod: VodClient) -> None:
    with pytest.raises(ValueError, match="at most 10"):
        await vod.list_ai_jobs([f"j{i}" for i in range(11)])
    assert (await vod.list_ai_jobs([])).jobs == []


async def test_wrong_secret_is_a_clear_error(fake: FakeVod) -> None:
    settings = settings_for(fake.url, access_key_secret="not-the-secret")
    async with VodClient(settings) as client:
        with pytest.raises(VodError) as caught:
            await client.submit_ai_job("m", ["AIVideoTag"])
    error = caught.value
    assert error.vod_code == "SignatureDoesNotMatch"
    assert error.http_status == 400
    assert error.request_id
    assert "SignatureDoesNotMatch" in str(error)
    assert "not-the-secret" not in str(error) + repr(error) + str(error.to_json())
    assert fake.jobs == {}


async def test_vod_error_codes_are_kept(vod: VodClient) -> None:
    with pytest.raises(VodError) as caught:
        await vod.submit_ai_job("m", ["AIVideoFingerprint"])
    assert caught.value.vod_code == "InvalidParameter"
    assert caught.value.to_json()["vod_code"] == "InvalidParameter"


async def test_throttling_is_retried(fake: FakeVod) -> None:
    fake.faults.qps = 10.0  # a bucket of 10, refilled one token per 0.1 s
    retried_before = counted("ListAIJob", "retried")
    async with VodClient(settings_for(fake.url, vod_retries=6), backoff=0.1) as vod:
        results = await asyncio.gather(*(vod.list_ai_jobs(["x"]) for _ in range(12)))
    assert all(r.missing == ["x"] for r in results)
    assert fake.refused.get("Throttling.User", 0) >= 1
    assert counted("ListAIJob", "retried") > retried_before


async def test_throttling_gives_up_after_bounded_retries(fake: FakeVod) -> None:
    fake.faults.qps = 0.001  # one token, refilled in about 17 minutes
    async with VodClient(settings_for(fake.url, vod_retries=2), backoff=0.001) as client:
        await client.list_ai_jobs(["x"])
        with pytest.raises(VodThrottled) as caught:
            await client.submit_ai_job("m", ["AIVideoTag"])
    assert caught.value.vod_code == "Throttling.User"
    assert fake.refused["Throttling.User"] == 3  # the first try and two retries
    assert fake.submit_calls == 0


async def test_client_rate_limit_avoids_throttling(fake: FakeVod) -> None:
    fake.faults.qps = 20.0
    async with VodClient(settings_for(fake.url, vod_rate_limit=20.0, vod_retries=0)) as client:
        await asyncio.gather(*(client.list_ai_jobs(["x"]) for _ in range(30)))
    assert fake.refused.get("Throttling.User", 0) == 0


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_is_retried_then_reported() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    before = counted("SubmitAIJob", "retried")
    async with VodClient(settings_for(url, vod_retries=2), backoff=0.001) as client:
        with pytest.raises(VodUnreachable, match="not sent"):
            await client.submit_ai_job("m", ["AIVideoTag"])
    assert counted("SubmitAIJob", "retried") == before + 2


async def test_submit_timeout_after_send_is_outcome_unknown(fake: FakeVod) -> None:
    fake.faults.slow_rate, fake.faults.slow_seconds = 1.0, 2.0
    settings = settings_for(fake.url, vod_timeout="0.3s")
    async with VodClient(settings, backoff=0.001) as client:
        with pytest.raises(VodOutcomeUnknown, match="may have been applied"):
            await client.submit_ai_job("m", ["AIVideoTag"])
    # VOD did create the job, and the client did not try again.
    assert fake.submit_calls == 1
    assert len(fake.jobs) == 1


async def test_idempotent_call_timeout_is_retried(fake: FakeVod) -> None:
    fake.faults.slow_rate, fake.faults.slow_seconds = 1.0, 2.0
    settings = settings_for(fake.url, vod_timeout="0.2s", vod_retries=1)
    async with VodClient(settings, backoff=0.001) as client:
        with pytest.raises(VodUnreachable, match="no answer"):
            await client.list_ai_jobs(["x"])
    assert fake.requests == 2


async def test_dropped_mid_response_is_outcome_unknown(fake: FakeVod, vod: VodClient) -> None:
    fake.faults.reset_rate = 1.0
    with pytest.raises(VodOutcomeUnknown):
        await vod.submit_ai_job("m", ["AIMediaDNA"])
    assert fake.submit_calls == 1


async def test_server_error_on_submit_is_outcome_unknown(fake: FakeVod, vod: VodClient) -> None:
    fake.faults.error_rate = 1.0
    with pytest.raises(VodOutcomeUnknown) as caught:
        await vod.submit_ai_job("m", ["AIMediaDNA"])
    assert caught.value.details["vod_code"] == "InternalError"
    with pytest.raises(VodError) as listed:
        await vod.list_ai_jobs(["x"])
    assert listed.value.http_status == 500


async def test_message_callback_round_trip(fake: FakeVod, vod: VodClient) -> None:
    await vod.set_message_callback(
        CallbackType="HTTP",
        CallbackURL="http://127.0.0.1:1/cb",
        EventTypeList="AIComplete",
        AuthSwitch="on",
        AuthKey="Abc123xyz",
    )
    current = await vod.get_message_callback()
    assert current["CallbackURL"] == "http://127.0.0.1:1/cb"
    assert current["AuthKey"] == "Abc123xyz"
    assert fake.callback_url == "http://127.0.0.1:1/cb"


async def test_secrets_never_leak(fake: FakeVod, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    wrong = settings_for(fake.url, access_key_secret="WrongSecret42", security_token=TOKEN)
    async with VodClient(wrong) as client:
        texts += [repr(client), repr(wrong), str(wrong)]
        with pytest.raises(VodError) as refused:
            await client.list_ai_jobs(["x"])
    # The gateway echoes its string to sign, which holds the STS token.
    assert "SecurityToken%3D***" in refused.value.message
    texts += [str(refused.value), repr(refused.value), str(refused.value.to_json())]

    fake.faults.qps = 0.001
    right = settings_for(fake.url, security_token=TOKEN, vod_retries=1)
    async with VodClient(right, backoff=0.001) as client:
        await client.list_ai_jobs(["x"])
        with pytest.raises(VodThrottled) as throttled:
            await client.list_ai_jobs(["x"])
    texts += [str(throttled.value), str(throttled.value.to_json()), repr(right)]
    texts += [r.getMessage() for r in caplog.records]
    assert any("retry 1/1" in t for t in texts)
    blob = "\n".join(texts)
    for secret in ("WrongSecret42", SECRET, TOKEN, "sts-Token%2Fwith%2Bodd%3Dchars"):
        assert secret not in blob


async def test_app_lifespan_owns_the_client(settings: Settings, fake: FakeVod) -> None:
    from asgi_lifespan import LifespanManager

    from tracker.app import create_app

    without = create_app(settings)
    async with LifespanManager(without):
        assert context_of(without).vod is None
    configured = settings.model_copy(
        update={
            "access_key_id": AK,
            "access_key_secret": settings_for(fake.url).access_key_secret,
            "vod_endpoint": fake.url,
        }
    )
    app = create_app(configured)
    async with LifespanManager(app):
        clients = context_of(app).vod
        assert isinstance(clients, VodClients)
        client = clients.default
        await client.list_ai_jobs(["x"])
    assert not client.http.opened
