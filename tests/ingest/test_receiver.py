"""`POST /callbacks/vod`: signatures, documented bodies, duplicates, bad input (reference 6)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests import factories
from tracker import metrics
from tracker.app import create_app
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.context import context_of
from tracker.db import Database
from tracker.ingest.receiver import MAX_BODY
from tracker.models import CallbackEvent, Job, JobState, Origin
from tracker.vod import sign_callback

URL = "https://www.example.com/your/callback"
KEY = "test123"
ROTATED = "Rotated456"

# vod-reference.md 6.2, verbatim (tag values translated there).
TAG_EVENT = {
    "EventTime": "2017-03-20T07:49:17Z",
    "EventType": "AIVideoTagComplete",
    "JobId": "jd83k4184c0e47098a5b665e2aj3****",
    "MediaId": "sj83k40d92c641401fab46a0b842e9****",
    "Status": "success",
    "Code": "0",
    "Message": "OK",
    "Data": '{"Keyword":[{"Times":["3260","4000"],"Tag":"cushion"}],"Person":[{"Times":["10760"],'
    '"Tag":"Zhang San","FaceUrl":"http://test.com/aivideotag/.../Index_00016.jpg"}],'
    '"Location":[{"Times":["8410"],"Tag":"Asia"}]}',
}
# The current DNA page: CompleteTime, and EventTime with a colon before the milliseconds.
DNA_EVENT = {
    "EventTime": "2017-03-20T07:49:17:025Z",
    "CompleteTime": "2017-03-20T07:49:35Z",
    "EventType": "AIMediaDNAComplete",
    "JobId": "88c6ca184c0edj384a5b665e2a12****",
    "MediaId": "3D12340d92cjsw83k1fab46a0b847fd****",
    "Status": "success",
    "Code": "0",
    "Message": "OK",
    "Data": '{"VideoDNA":[{"Similarity":"0.99","PrimaryKey":"7a1d275cc8da4jw93mkde0e182e80****",'
    '"Detail":[{"Input":{"Start":"0.0","Duration":"14.0"},'
    '"Duplication":{"Start":"0.5","Duration":"14.4"}}]}]}',
}


def signed_headers(clock: FrozenClock, key: str = KEY, skew: int = 0) -> dict[str, str]:
    timestamp = int(clock.now.timestamp()) + skew
    return {
        "X-VOD-TIMESTAMP": str(timestamp),
        "X-VOD-SIGNATURE": sign_callback(URL, timestamp, key),
    }


async def settle(database: Database) -> None:
    """Wait (bounded) until the background applier has looked at every stored event."""
    for _ in range(500):
        async with database.session() as session:
            waiting = await session.scalar(
                select(func.count())
                .select_from(CallbackEvent)
                .where(CallbackEvent.applied.is_(None))
            )
        if not waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("events still unapplied")


# Jobs submitted before the events of vod-reference.md's examples (2017).
add_job = partial(factories.add_job, at=datetime(2017, 3, 20, 7, 0, tzinfo=UTC))
job = factories.find_job


async def events(database: Database) -> list[CallbackEvent]:
    async with database.session() as session:
        return list(await session.scalars(select(CallbackEvent).order_by(CallbackEvent.id)))


def counter(metric: Any, *labels: str) -> float:
    target = metric.labels(*labels) if labels else metric
    return float(target._value.get())


@pytest.fixture
def signed_settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, callback_url=URL, callback_auth_key=[KEY, ROTATED])


@pytest.fixture
async def signed(
    signed_settings: Settings, clock: FrozenClock
) -> AsyncIterator[tuple[httpx.AsyncClient, Database]]:
    app = create_app(signed_settings, clock=clock)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            yield http, context_of(app).database


def test_signature_matches_the_documented_example() -> None:
    doc = "https://www.example.com/your/callback"
    assert sign_callback(doc, 1519375990, "test123") == "c72b60894140fa98920f1279219b7ed4"
    # The zh page's `Test123` is a typo: it signs differently.
    assert sign_callback(doc, 1519375990, "Test123") == "c587b80d2d0ede300e8967937da7219b"


async def test_documented_bodies_drive_jobs_to_their_results(
    signed: tuple[httpx.AsyncClient, Database], clock: FrozenClock
) -> None:
    http, database = signed
    await add_job(database, TAG_EVENT["JobId"], media_id=TAG_EVENT["MediaId"])
    await add_job(database, DNA_EVENT["JobId"], media_id=DNA_EVENT["MediaId"], type="AIMediaDNA")
    for body in (TAG_EVENT, DNA_EVENT):
        # VOD's Content-Type is undocumented: the body is JSON whatever the header says.
        response = await http.post(
            "/callbacks/vod",
            content=json.dumps(body),
            headers={**signed_headers(clock), "Content-Type": "text/plain"},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "stored"}
    await settle(database)

    tag = await job(database, TAG_EVENT["JobId"])
    assert tag.state == JobState.SUCCEEDED
    assert tag.result["Keyword"][0]["Tag"] == "cushion"
    assert tag.code == "0"
    assert tag.event_time == datetime(2017, 3, 20, 7, 49, 17, tzinfo=UTC)
    dna = await job(database, DNA_EVENT["JobId"])
    assert dna.state == JobState.SUCCEEDED
    assert dna.result["VideoDNA"][0]["Similarity"] == "0.99"
    assert dna.event_time == datetime(2017, 3, 20, 7, 49, 17, 25000, tzinfo=UTC)
    assert dna.completed_at == datetime(2017, 3, 20, 7, 49, 35, tzinfo=UTC)
    assert [(e.applied, e.reason) for e in await events(database)] == [(True, "applied")] * 2


async def test_a_failed_job_keeps_code_and_message(
    signed: tuple[httpx.AsyncClient, Database], clock: FrozenClock
) -> None:
    http, database = signed
    await add_job(database, "job-fail")
    body = {**TAG_EVENT, "JobId": "job-fail", "Status": "fail", "Code": "InvalidVideo"}
    body.update(Message="the video cannot be analysed", Data="")
    response = await http.post("/callbacks/vod", json=body, headers=signed_headers(clock))
    assert response.status_code == 200
    await settle(database)
    failed = await job(database, "job-fail")
    assert (failed.state, failed.code, failed.message) == (
        JobState.FAILED,
        "InvalidVideo",
        "the video cannot be analysed",
    )


async def test_four_deliveries_apply_once(
    signed: tuple[httpx.AsyncClient, Database], clock: FrozenClock
) -> None:
    http, database = signed
    await add_job(database, TAG_EVENT["JobId"])
    applied_before = counter(metrics.CALLBACKS_APPLIED)
    answers = []
    for attempt in range(4):
        # VOD re-serialises: key order and spacing may differ between deliveries.
        body = dict(reversed(TAG_EVENT.items())) if attempt % 2 else TAG_EVENT
        response = await http.post(
            "/callbacks/vod",
            content=json.dumps(body, indent=attempt),
            headers=signed_headers(clock),
        )
        assert response.status_code == 200
        answers.append(response.json()["status"])
        await settle(database)
        if attempt == 0:
            first = await job(database, TAG_EVENT["JobId"])
    assert answers == ["stored", "duplicate", "duplicate", "duplicate"]
    (event,) = await events(database)
    assert (event.deliveries, event.applied) == (4, True)
    assert counter(metrics.CALLBACKS_APPLIED) - applied_before == 1
    again = await job(database, TAG_EVENT["JobId"])
    assert (again.updated_at, again.state) == (first.updated_at, first.state)


async def test_a_fail_after_a_success_changes_nothing(
    signed: tuple[httpx.AsyncClient, Database], clock: FrozenClock
) -> None:
    http, database = signed
    await add_job(database, TAG_EVENT["JobId"])
    await http.post("/callbacks/vod", json=TAG_EVENT, headers=signed_headers(clock))
    await settle(database)
    before = await job(database, TAG_EVENT["JobId"])
    later = {**TAG_EVENT, "Status": "fail", "EventTime": "2017-03-20T08:00:00Z", "Data": ""}
    response = await http.post("/callbacks/vod", json=later, headers=signed_headers(clock))
    assert response.status_code == 200
    await settle(database)
    after = await job(database, TAG_EVENT["JobId"])
    assert (after.state, after.result, after.updated_at) == (
        JobState.SUCCEEDED,
        before.result,
        before.updated_at,
    )
    assert [(e.status, e.applied, e.reason) for e in await events(database)] == [
        ("success", True, "applied"),
        ("fail", False, "already_final"),
    ]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing_signature"),
        ({"X-VOD-TIMESTAMP": "1767323045"}, "missing_signature"),
        ({"X-VOD-TIMESTAMP": "1767323045", "X-VOD-SIGNATURE": "0" * 32}, "bad_signature"),
        ({"X-VOD-TIMESTAMP": "soon", "X-VOD-SIGNATURE": "0" * 32}, "bad_timestamp"),
        ({"X-VOD-TIMESTAMP": "1767323045", "X-VOD-SIGNATURE": "é" * 32}, "bad_signature"),
    ],
)
async def test_unsigned_or_forged_callbacks_are_refused(
    signed: tuple[httpx.AsyncClient, Database], headers: dict[str, str], reason: str
) -> None:
    http, database = signed
    await add_job(database, TAG_EVENT["JobId"])
    before = counter(metrics.CALLBACKS_REJECTED, reason)
    encoded = {k: v.encode("latin-1") for k, v in headers.items()}
    response = await http.post("/callbacks/vod", json=TAG_EVENT, headers=encoded)
    assert response.status_code == 401
    assert response.json()["error"] == reason
    assert counter(metrics.CALLBACKS_REJECTED, reason) == before + 1
    assert await events(database) == []
    assert (await job(database, TAG_EVENT["JobId"])).state == JobState.PROCESSING


async def test_signature_for_another_url_or_key_is_refused(
    signed: tuple[httpx.AsyncClient, Database], clock: FrozenClock
) -> None:
    http, database = signed
    timestamp = int(clock.now.timestamp())
    for url, key in ((URL + "/", KEY), (URL, "wrong-key"), (URL, "Test123")):
        headers = {
            "X-VOD-TIMESTAMP": str(timestamp),
            "X-VOD-SIGNATURE": sign_callback(url, timestamp, key),
        }
        response = await http.post("/callbacks/vod", json=TAG_EVENT, headers=headers)
        assert response.status_code == 401
    assert await events(database) == []


@pytest.mark.parametrize("skew", [-301, 301, -86400])
async def test_timestamps_outside_the_window_are_refused(
    signed: tuple[httpx.AsyncClient, Database], clock: FrozenClock, skew: int
) -> None:
    http, database = signed
    response = await http.post(
        "/callbacks/vod", json=TAG_EVENT, headers=signed_headers(clock, skew=skew)
    )
    assert (response.status_code, response.json()["error"]) == (401, "stale_timestamp")
    assert await events(database) == []


async def test_any_configured_key_and_any_hex_case_is_accepted(
    signed: tuple[httpx.AsyncClient, Database], clock: FrozenClock
) -> None:
    http, database = signed
    headers = signed_headers(clock, key=ROTATED, skew=-299)
    headers["X-VOD-SIGNATURE"] = headers["X-VOD-SIGNATURE"].upper()
    response = await http.post("/callbacks/vod", json=TAG_EVENT, headers=headers)
    assert response.status_code == 200
    assert len(await events(database)) == 1


async def test_bodies_over_64_kib_are_refused(
    signed: tuple[httpx.AsyncClient, Database], clock: FrozenClock
) -> None:
    http, database = signed
    megabyte = json.dumps({**TAG_EVENT, "Data": "x" * 1_000_000}).encode()
    response = await http.post("/callbacks/vod", content=megabyte, headers=signed_headers(clock))
    assert (response.status_code, response.json()["error"]) == (413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(20):
            yield b"x" * 4096

    response = await http.post("/callbacks/vod", content=chunks(), headers=signed_headers(clock))
    assert response.status_code == 413
    just_fits = json.dumps({**TAG_EVENT, "Data": "x" * (MAX_BODY - 600)})
    assert len(just_fits) <= MAX_BODY
    response = await http.post("/callbacks/vod", content=just_fits, headers=signed_headers(clock))
    assert response.status_code == 200
    assert len(await events(database)) == 1


async def test_malformed_bodies_get_400_and_are_kept_for_inspection(
    client: httpx.AsyncClient, app: Any
) -> None:
    database: Database = context_of(app).database
    cases = [
        (b"{not json", "body is not UTF-8 JSON"),
        (b"\xff\xfe\x00garbage", "body is not UTF-8 JSON"),
        (b"[1, 2]", "body is not a JSON object"),
        (json.dumps({**TAG_EVENT, "JobId": None}).encode(), "JobId missing or not a short string"),
        (json.dumps({**TAG_EVENT, "Status": "maybe"}).encode(), "Status must be success or fail"),
        (json.dumps({"JobId": "j"}).encode(), "EventType missing or not a short string"),
        (json.dumps({**TAG_EVENT, "JobId": "a\u0000b"}).encode(), "JobId missing or not a"),
        (json.dumps({**TAG_EVENT, "Status": "processing"}).encode(), "Status must be success"),
    ]
    for body, reason in cases:
        response = await client.post("/callbacks/vod", content=body)
        assert response.status_code == 400, body
        assert response.json()["error"] == "bad_request"
        assert response.json()["message"].startswith(reason)
    stored = await events(database)
    assert len(stored) == len(cases)
    assert all(e.applied is False and e.reason.startswith("malformed: ") for e in stored)
    assert "\\xff\\xfe\\x00garbage" in stored[1].body


async def test_other_event_types_are_stored_and_acknowledged(
    client: httpx.AsyncClient, app: Any
) -> None:
    upload = {
        "EventTime": "2017-03-20T07:49:17Z",
        "EventType": "FileUploadComplete",
        "VideoId": "v1",
        "Status": "success",
        "Size": 123,
    }
    response = await client.post("/callbacks/vod", json=upload)
    assert response.status_code == 200
    (event,) = await events(context_of(app).database)
    assert (event.event_type, event.media_id, event.applied, event.reason) == (
        "FileUploadComplete",
        "v1",
        False,
        "not_ai_event",
    )


async def test_a_job_we_never_submitted_is_learned_from_its_callback(
    client: httpx.AsyncClient, app: Any
) -> None:
    database: Database = context_of(app).database
    response = await client.post("/callbacks/vod", json=DNA_EVENT)
    assert response.status_code == 200
    await settle(database)
    learned = await job(database, DNA_EVENT["JobId"])
    assert (learned.origin, learned.state, learned.type) == (
        Origin.CALLBACK,
        JobState.SUCCEEDED,
        "AIMediaDNA",
    )


async def test_a_callback_resolves_an_unknown_submission(
    client: httpx.AsyncClient, app: Any
) -> None:
    database: Database = context_of(app).database
    await add_job(database, None, media_id=TAG_EVENT["MediaId"], state=JobState.SUBMIT_UNKNOWN)
    await client.post("/callbacks/vod", json=TAG_EVENT)
    await settle(database)
    resolved = await job(database, TAG_EVENT["JobId"])
    assert (resolved.origin, resolved.state) == (Origin.SUBMITTED, JobState.SUCCEEDED)


async def test_with_confirmation_a_terminal_outcome_waits_as_pending(
    database_url: str, clock: FrozenClock
) -> None:
    settings = Settings(database_url=database_url, callback_confirm="on")
    app = create_app(settings, clock=clock)
    async with LifespanManager(app):
        database: Database = context_of(app).database
        await add_job(database, TAG_EVENT["JobId"])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            response = await http.post("/callbacks/vod", json=TAG_EVENT)
        assert response.status_code == 200
        await settle(database)
        pending = await job(database, TAG_EVENT["JobId"])
        assert (pending.state, pending.pending_status, pending.pending_since) == (
            JobState.PROCESSING,
            "success",
            clock.now,
        )
        (event,) = await events(database)
        assert (event.applied, event.reason) == (False, "pending_confirmation")


# -- fuzzing: nothing a sender posts produces a 500 or changes a job ---------------------------

FUZZ_JOB = "fuzz-job"
_base = {**TAG_EVENT, "JobId": FUZZ_JOB}
# Values no field that identifies an event may hold (a junk Status may also be a word).
_junk = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=300),
    st.sampled_from(["", "a\u0000b", "\ud800"]),
)
_junk_status = _junk | st.sampled_from(["maybe", "SUCCESS?", "ok\n", "succeeded"])


@st.composite
def _broken_event(draw: st.DrawFn) -> bytes:
    body = dict(_base)
    # Not MediaId nor EventTime: without them an event is still valid (and would apply).
    field = draw(st.sampled_from(["JobId", "Status", "EventType"]))
    if draw(st.booleans()):
        del body[field]
    else:
        body[field] = draw(_junk_status if field == "Status" else _junk)
    text = json.dumps(body, allow_nan=True, ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


_malformed = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    st.integers(min_value=1, max_value=len(json.dumps(_base)) - 1).map(
        lambda cut: json.dumps(_base)[:cut].encode()
    ),
    _broken_event(),
    st.recursive(st.none() | st.integers(), st.lists, max_leaves=20).map(
        lambda v: json.dumps(v).encode()
    ),
    st.just(b"[" * 5000 + b"]" * 5000),
)


@hsettings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_malformed)
async def test_fuzzed_bodies_never_fail_the_server_nor_change_a_job(
    client: httpx.AsyncClient, app: Any, body: bytes
) -> None:
    database: Database = context_of(app).database
    async with database.session() as session:
        if await session.scalar(select(Job).where(Job.job_id == FUZZ_JOB)) is None:
            await add_job(database, FUZZ_JOB)
    response = await client.post("/callbacks/vod", content=body)
    assert response.status_code in (200, 400, 413), (response.status_code, body)
    assert response.headers["content-type"] == "application/json"
    response.json()
    await settle(database)
    fuzzed = await job(database, FUZZ_JOB)
    assert (fuzzed.state, fuzzed.status, fuzzed.result) == (JobState.PROCESSING, None, None)
    async with database.session() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 1


# -- issue 13: the body is unsigned, so every field is untrusted ------------------------------


async def test_nan_and_infinity_are_refused_and_a_result_holding_them_stays_text(
    client: httpx.AsyncClient, app: Any
) -> None:
    """Python's parser takes NaN, Infinity and 1e999; JSON (and every JSON response) does not."""
    database: Database = context_of(app).database
    await add_job(database, TAG_EVENT["JobId"], media_id=TAG_EVENT["MediaId"])
    tagged = json.dumps(TAG_EVENT)
    for body in (
        tagged.replace('"Code": "0"', '"Code": NaN'),
        tagged.replace('"Data": "', '"Data": Infinity, "Was": "'),
        tagged.replace('"Data": "', '"Data": [1e999], "Was": "'),
        tagged.replace('"Message": "OK"', '"Message": -Infinity'),
    ):
        response = await client.post("/callbacks/vod", content=body)
        assert response.status_code == 400, body
        assert response.json()["message"] == "body is not UTF-8 JSON"
    await settle(database)
    untouched = await job(database, TAG_EVENT["JobId"])
    assert (untouched.state, untouched.result) == (JobState.PROCESSING, None)

    # Inside the `Data` string it is VOD's result, not the body: kept, as the text it is.
    data = '{"x": NaN, "y": [1e999]}'
    response = await client.post("/callbacks/vod", json={**TAG_EVENT, "Data": data})
    assert response.status_code == 200
    await settle(database)
    assert (await job(database, TAG_EVENT["JobId"])).result == data
    for path in (f"/jobs/{TAG_EVENT['JobId']}", f"/media/{TAG_EVENT['MediaId']}/jobs", "/jobs"):
        assert (await client.get(path)).status_code == 200, path


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("JobId", ",".join("abcdefghijk")),  # eleven ids in ListAIJob's JobIds
        ("JobId", "a/b"),
        ("JobId", "a b"),
        ("JobId", ".."),
        ("JobId", "x" * 129),
        ("JobId", 12345),
        ("MediaId", "m,1"),
        ("MediaId", "m/1"),
        ("MediaId", "m\n1"),
    ],
)
async def test_ids_not_of_vods_shape_are_refused(
    client: httpx.AsyncClient, app: Any, field: str, value: object
) -> None:
    database: Database = context_of(app).database
    response = await client.post("/callbacks/vod", json={**TAG_EVENT, field: value})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert response.json()["message"].startswith(f"{field} ")
    await settle(database)
    (stored,) = await events(database)  # kept for inspection; the bad id in no column
    assert stored.applied is False
    assert (stored.job_id if field == "JobId" else stored.media_id) is None
    async with database.session() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 0


async def test_ids_of_vods_shape_are_taken_leniently(client: httpx.AsyncClient, app: Any) -> None:
    """32 hex digits, the documented samples' `****` masks, and other letters, `_ - .`."""
    database: Database = context_of(app).database
    job_ids = ["9e82640c85114bf5af23edfaf0a1b2c3", "jd83k4184c0e4709****", "job_1-2.x"]
    for n, job_id in enumerate(job_ids):
        body = {**TAG_EVENT, "JobId": job_id, "MediaId": f"media:{n}@a=b+c"}
        assert (await client.post("/callbacks/vod", json=body)).status_code == 200
    await settle(database)
    for job_id in job_ids:
        assert (await job(database, job_id)).state == JobState.SUCCEEDED


async def test_untracked_ai_event_types_are_stored_but_never_jobs(
    client: httpx.AsyncClient, app: Any
) -> None:
    """AIMediaAuditComplete arrives under the same AIComplete subscription (reference 6.1)."""
    database: Database = context_of(app).database
    audit = {**TAG_EVENT, "EventType": "AIMediaAuditComplete", "JobId": "a" * 32}
    invented = [{**TAG_EVENT, "EventType": f"AIType{n}Complete", "JobId": f"j{n}"} for n in (1, 2)]
    for body in (audit, *invented):
        response = await client.post("/callbacks/vod", json=body)
        assert (response.status_code, response.json()) == (200, {"status": "stored"})
    await settle(database)
    stored = await events(database)
    assert [(e.event_type, e.applied, e.reason) for e in stored] == [
        ("AIMediaAuditComplete", False, "untracked_ai_type"),
        ("AIType1Complete", False, "untracked_ai_type"),
        ("AIType2Complete", False, "untracked_ai_type"),
    ]
    async with database.session() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 0
    stats = (await client.get("/stats")).json()
    assert stats["jobs"]["by_type"] == {}
    assert "AIMediaAudit" not in (await client.get("/metrics")).text


async def test_with_confirmation_a_forged_job_id_never_resolves_a_waiting_job(
    database_url: str, clock: FrozenClock
) -> None:
    """An unknown JobId of the same media and type as a `submit_unknown` job: only VOD may
    say that it is that job's (tests/scheduler/test_reconcile.py covers VOD's answer)."""
    settings = Settings(database_url=database_url, callback_confirm="on")
    app = create_app(settings, clock=clock)
    async with LifespanManager(app):
        database: Database = context_of(app).database
        media = TAG_EVENT["MediaId"]
        await add_job(database, None, media_id=media, state=JobState.SUBMIT_UNKNOWN)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            for forged in ("f" * 32, "e" * 32):  # each alone: no JobId for the waiting job
                response = await http.post("/callbacks/vod", json={**TAG_EVENT, "JobId": forged})
                assert response.status_code == 200
                await settle(database)
        async with database.session() as session:
            jobs = list(await session.scalars(select(Job)))
        assert [(j.job_id, j.state, j.pending_status) for j in jobs] == [
            (None, JobState.SUBMIT_UNKNOWN, None)
        ]
        assert [(e.applied, e.reason) for e in await events(database)] == [
            (False, "pending_confirmation"),
            (False, "pending_confirmation"),
        ]
