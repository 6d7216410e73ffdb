"""The submitter against the VOD simulator on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from tracker.app import create_app
from tracker.cli.reporters import PlainReporter
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.db import Database
from tracker.errors import BadRequest
from tracker.fakevod import FakeVod, Faults, Refused
from tracker.models import Job, JobState, Origin, Submission
from tracker.submit.batch import Item, dry_run, read_items, run_batch
from tracker.submit.claims import SubmitRequest, claim_many, record_many
from tracker.submit.service import TypeOutcome, submit_media
from tracker.submit.validate import validate_request
from tracker.transitions import Applied, apply_outcome
from tracker.vod import AIJob, SubmitResult, VodClient

KEY, SECRET = "test-key-id", "test-key-secret"
JSON_TYPE = {"Content-Type": "application/json"}
BOTH = ("AIVideoTag", "AIMediaDNA")


class RefusingVod(FakeVod):
    """Refuses SubmitAIJob for chosen media with a VOD error body (vod-reference.md 1.4), and
    throttles every `throttle_every`-th call (the `qps` bucket needs a sustained overload)."""

    refuse: set[str]
    throttle_every = 0
    _calls = 0

    def _submit(self, params: Mapping[str, str]) -> dict[str, Any]:
        self._calls += 1
        if self.throttle_every and self._calls % self.throttle_every == 0:
            raise Refused(400, "Throttling.User", "Request was denied due to user flow control.")
        if params.get("MediaId") in self.refuse:
            raise Refused(403, "Forbidden.RAM", "The user is not authorized for this media.")
        return super()._submit(params)


@pytest.fixture
async def fake() -> AsyncIterator[RefusingVod]:
    simulator = RefusingVod(
        access_key_id=KEY, access_key_secret=SECRET, seed=4, faults=Faults(delay=0.2)
    )
    simulator.refuse = set()
    await simulator.start()
    yield simulator
    await simulator.stop()


def vod_settings(database_url: str, url: str, **more: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "vod_endpoint": url,
        "access_key_id": KEY,
        "access_key_secret": SECRET,
        "vod_rate_limit": 5000.0,
        "vod_timeout": timedelta(seconds=2),
    }
    return Settings(**(values | more))


@pytest.fixture
async def vod(database_url: str, fake: FakeVod) -> AsyncIterator[VodClient]:
    async with VodClient(vod_settings(database_url, fake.url)) as client:
        yield client


async def jobs_of(database: Database, media_id: str | None = None) -> list[Job]:
    query = select(Job).order_by(Job.id)
    if media_id is not None:
        query = query.where(Job.media_id == media_id)
    async with database.session() as session:
        return list(await session.scalars(query))


def truth(fake: FakeVod) -> Counter[tuple[str, str]]:
    """How many jobs VOD really created per (media, type)."""
    return Counter((job.media_id, job.type) for job in fake.jobs.values())


# --- validation ---------------------------------------------------------------------------------


def test_valid_request_is_normalised() -> None:
    request = validate_request(
        " m1 ", "AIVideoTag, AIMediaDNA,AIVideoTag", '{"AIVideoTag":{}}', None, region="cn-beijing"
    )
    assert request == SubmitRequest("m1", BOTH, {"AIVideoTag": {}}, None, region="cn-beijing")


@pytest.mark.parametrize(
    ("media_id", "types", "config", "user_data", "fragment"),
    [
        ("", "AIVideoTag", None, None, "media_id"),
        ("a b", "AIVideoTag", None, None, "media_id"),
        ("m1", "AIVideoCover", None, None, "valid types are AIVideoTag, AIMediaDNA"),
        ("m1", "", None, None, "types"),
        ("m1", "AIVideoTag", "[1]", None, "config: must be a JSON object"),
        ("m1", "AIVideoTag", "{bad", None, "config: not valid JSON"),
        ("m1", "AIVideoTag", None, {"Extend": "x" * 513}, "513 bytes"),
        ("m1", "AIVideoTag", None, {"MessageCallback": {"CallbackURL": "ftp://x"}}, "CallbackURL"),
    ],
)
def test_invalid_requests_are_refused_with_a_reason(
    media_id: str, types: str, config: Any, user_data: Any, fragment: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        validate_request(media_id, types, config, user_data, region="cn-shanghai")
    assert fragment in caught.value.message


def test_extend_of_512_bytes_is_accepted() -> None:
    extend = "é" * 256  # 512 bytes in UTF-8
    validate_request("m1", "AIVideoTag", None, {"Extend": extend}, region="cn-shanghai")


def test_types_the_region_lacks_are_refused() -> None:
    validate_request("m1", "AIMediaDNA", None, None, region="ap-southeast-1")
    with pytest.raises(BadRequest) as caught:
        validate_request("m1", BOTH, None, None, region="ap-southeast-1")
    assert caught.value.code == "type_not_in_region"
    assert "AIVideoTag" in caught.value.message


# --- the service --------------------------------------------------------------------------------


async def test_submit_stores_each_job_id_in_processing(
    database: Database, vod: VodClient, fake: FakeVod, clock: FrozenClock
) -> None:
    done = await submit_media(database, vod, SubmitRequest("m1", BOTH), clock)
    assert done.outcomes == dict.fromkeys(BOTH, TypeOutcome.SUBMITTED)
    jobs = await jobs_of(database)
    assert {job.type for job in jobs} == set(BOTH)
    for job in jobs:
        assert job.state == JobState.PROCESSING
        assert job.job_id is not None
        assert fake.jobs[job.job_id].type == job.type
        assert fake.jobs[job.job_id].media_id == "m1"
    async with database.session() as session:
        submission = await session.scalar(select(Submission))
    assert submission is not None
    assert submission.state == "submitted"
    assert submission.request_id


async def test_live_or_done_jobs_are_skipped_and_force_resubmits(
    database: Database, vod: VodClient, fake: FakeVod, clock: FrozenClock
) -> None:
    await submit_media(database, vod, SubmitRequest("m1", ("AIVideoTag",)), clock)
    (first,) = await jobs_of(database)
    assert first.job_id is not None
    async with database.write() as session:
        success = _outcome(
            {"JobId": first.job_id, "EventType": "AIVideoTagComplete", "MediaId": "m1"}
        )
        applied = await apply_outcome(session, success, clock())
    assert applied is Applied.APPLIED

    again = await submit_media(database, vod, SubmitRequest("m1", BOTH), clock)
    assert again.outcomes == {
        "AIVideoTag": TypeOutcome.SKIPPED,
        "AIMediaDNA": TypeOutcome.SUBMITTED,
    }
    assert fake.submit_calls == 2
    assert sorted(fake.jobs[j.job_id].type for j in await jobs_of(database) if j.job_id) == [
        "AIMediaDNA",
        "AIVideoTag",
    ]

    forced = await submit_media(
        database, vod, SubmitRequest("m1", ("AIVideoTag",)), clock, force=True
    )
    assert forced.outcomes == {"AIVideoTag": TypeOutcome.SUBMITTED}
    tags = [j for j in await jobs_of(database) if j.type == "AIVideoTag"]
    assert len(tags) == 2
    assert tags[0].superseded_at is not None
    assert tags[0].state == JobState.SUCCEEDED
    assert tags[1].superseded_at is None
    assert tags[1].state == JobState.PROCESSING


def _outcome(event: Mapping[str, Any]) -> Any:
    from tracker.transitions import Outcome as VodOutcome

    return VodOutcome(
        job_id=event["JobId"],
        type=event["EventType"].removesuffix("Complete"),
        status=event.get("Status", "success"),
        media_id=event["MediaId"],
    )


async def test_refusal_is_submit_failed_with_vods_code_and_a_rerun_submits(
    database: Database, vod: VodClient, fake: RefusingVod, clock: FrozenClock
) -> None:
    fake.refuse = {"m1"}
    done = await submit_media(database, vod, SubmitRequest("m1", BOTH), clock)
    assert done.outcomes == dict.fromkeys(BOTH, TypeOutcome.FAILED)
    assert fake.submit_calls == 0
    for job in await jobs_of(database):
        assert job.state == JobState.SUBMIT_FAILED
        assert job.code == "Forbidden.RAM"
        assert job.message == "The user is not authorized for this media."
    async with database.session() as session:
        submission = await session.scalar(select(Submission))
    assert submission is not None
    assert (submission.state, submission.code) == ("submit_failed", "Forbidden.RAM")
    assert submission.request_id

    fake.refuse = set()
    retry = await submit_media(database, vod, SubmitRequest("m1", BOTH), clock)
    assert retry.outcomes == dict.fromkeys(BOTH, TypeOutcome.SUBMITTED)
    states = Counter(job.state for job in await jobs_of(database))
    assert states == {JobState.SUBMIT_FAILED: 2, JobState.PROCESSING: 2}


async def test_too_slow_an_answer_is_submit_unknown_never_a_duplicate(
    database_url: str, database: Database, fake: FakeVod, clock: FrozenClock
) -> None:
    fake.faults.slow_rate, fake.faults.slow_seconds = 1.0, 3.0
    settings = vod_settings(database_url, fake.url, vod_timeout=timedelta(seconds=0.5))
    async with VodClient(settings) as client:
        done = await submit_media(database, client, SubmitRequest("m1", ("AIVideoTag",)), clock)
        assert done.outcomes == {"AIVideoTag": TypeOutcome.UNKNOWN}
        (job,) = await jobs_of(database)
        assert (job.state, job.job_id) == (JobState.SUBMIT_UNKNOWN, None)
        assert fake.submit_calls == 1  # VOD did create it: the truth has one job

        again = await submit_media(database, client, SubmitRequest("m1", ("AIVideoTag",)), clock)
        assert again.outcomes == {"AIVideoTag": TypeOutcome.SKIPPED}
        assert fake.submit_calls == 1

    (real,) = fake.jobs.values()
    async with database.write() as session:
        event = {"JobId": real.job_id, "EventType": "AIVideoTagComplete", "MediaId": "m1"}
        resolved = await apply_outcome(session, _outcome(event), clock())
    assert resolved is Applied.RESOLVED
    (job,) = await jobs_of(database)
    assert job.job_id == real.job_id


async def test_unreachable_vod_is_submit_failed_with_a_clear_code(
    database_url: str, database: Database, clock: FrozenClock, unused_tcp_port: int
) -> None:
    settings = vod_settings(database_url, f"http://127.0.0.1:{unused_tcp_port}", vod_retries=0)
    async with VodClient(settings) as client:
        done = await submit_media(database, client, SubmitRequest("m1", BOTH), clock)
    assert done.outcomes == dict.fromkeys(BOTH, TypeOutcome.FAILED)
    assert {(j.state, j.code) for j in await jobs_of(database)} == {
        (JobState.SUBMIT_FAILED, "vod_unreachable")
    }


async def test_concurrent_submitters_of_one_media_call_vod_once(
    database_url: str, vod: VodClient, fake: FakeVod, clock: FrozenClock
) -> None:
    databases = [Database(database_url) for _ in range(3)]  # three processes' worth of writers
    try:
        results = await asyncio.gather(
            *(
                submit_media(databases[i % 3], vod, SubmitRequest("m1", BOTH), clock)
                for i in range(12)
            )
        )
        assert fake.submit_calls == 1
        assert truth(fake) == {("m1", "AIVideoTag"): 1, ("m1", "AIMediaDNA"): 1}
        assert len([r for r in results if r.sent]) == 1
        assert len(await jobs_of(databases[0])) == 2
    finally:
        for db in databases:
            await db.dispose()


async def test_a_callback_that_beats_the_record_is_kept(
    database: Database, clock: FrozenClock
) -> None:
    request = SubmitRequest("m1", BOTH)
    async with database.write() as session:
        (claim,) = await claim_many(session, [request], clock())
    # VOD's callback for the tag job arrives before the submitter stored the JobIds.
    async with database.write() as session:
        early = _outcome(
            {
                "JobId": "j-tag",
                "EventType": "AIVideoTagComplete",
                "Status": "success",
                "MediaId": "m1",
            }
        )
        assert await apply_outcome(session, early, clock()) is Applied.RESOLVED
    # ...and one for the DNA job arrives without a MediaId match: a row of its own.
    async with database.write() as session:
        stray = _outcome(
            {
                "JobId": "j-dna",
                "EventType": "AIMediaDNAComplete",
                "Status": "success",
                "MediaId": "",
            }
        )
        assert await apply_outcome(session, stray, clock()) is Applied.CREATED
    result = SubmitResult(
        "r1", [AIJob("j-tag", "m1", "AIVideoTag"), AIJob("j-dna", "m1", "AIMediaDNA")]
    )
    async with database.write() as session:
        await record_many(session, [(claim, result)], clock())
    jobs = {job.job_id: job for job in await jobs_of(database)}
    assert set(jobs) == {"j-tag", "j-dna"}
    assert jobs["j-tag"].state == JobState.SUCCEEDED
    assert jobs["j-dna"].state == JobState.SUCCEEDED
    assert jobs["j-dna"].origin == Origin.SUBMITTED
    assert jobs["j-dna"].submission_id == claim.submission_id


# --- POST /jobs ---------------------------------------------------------------------------------


@pytest.fixture
async def api(
    database_url: str, fake: FakeVod, clock: FrozenClock
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        vod_settings(database_url, fake.url, api_tokens="t0ken", vod_retries=1), clock=clock
    )
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": "Bearer t0ken"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=headers
        ) as http:
            yield http


async def test_post_jobs_returns_the_jobs(api: httpx.AsyncClient, fake: FakeVod) -> None:
    body = {"media_id": "m1", "types": list(BOTH), "user_data": {"Extend": {"k": "v"}}}
    response = await api.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    jobs = response.json()["jobs"]
    assert sorted(j["type"] for j in jobs) == sorted(BOTH)
    assert all(j["state"] == "processing" and j["job_id"] in fake.jobs for j in jobs)
    assert all(fake.jobs[j["job_id"]].extend == '{"k":"v"}' for j in jobs)

    again = await api.post("/jobs", json=body)
    assert again.status_code == 200
    assert [j["job_id"] for j in again.json()["jobs"]] == [j["job_id"] for j in jobs]
    assert fake.submit_calls == 1


async def test_post_jobs_errors(api: httpx.AsyncClient, fake: RefusingVod) -> None:
    unknown = await api.post("/jobs", json={"media_id": "m1", "types": ["Nope"]})
    assert unknown.status_code == 400
    assert unknown.json()["valid_types"] == list(BOTH)
    assert (await api.post("/jobs", content=b"[", headers=JSON_TYPE)).status_code == 400
    assert (await api.post("/jobs", json=["m1"])).status_code == 400
    anonymous = await api.post("/jobs", json={"media_id": "m1"}, headers={"Authorization": ""})
    assert anonymous.status_code == 401

    fake.refuse = {"m2"}
    refused = await api.post("/jobs", json={"media_id": "m2", "types": ["AIMediaDNA"]})
    assert refused.status_code == 502
    body = refused.json()
    assert body["Code"] == "Forbidden.RAM"
    assert body["RequestId"]
    assert body["jobs"][0]["state"] == "submit_failed"

    fake.refuse = set()
    fake.throttle_every = 1  # every call throttled, through the client's retries
    throttled = await api.post("/jobs", json={"media_id": "m4", "types": ["AIMediaDNA"]})
    assert throttled.status_code == 429
    assert throttled.json()["Code"].startswith("Throttling")
    assert fake.submit_calls == 0


async def test_a_per_request_callback_is_passed_through(
    api: httpx.AsyncClient, fake: FakeVod
) -> None:
    callback = {"CallbackURL": "https://example.com/hook", "CallbackType": "http"}
    body = {"media_id": "m1", "types": ["AIMediaDNA"], "user_data": {"MessageCallback": callback}}
    response = await api.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    (job,) = response.json()["jobs"]
    assert fake.jobs[job["job_id"]].callback_url == "https://example.com/hook"


async def test_post_jobs_when_the_database_fails_sends_nothing(
    api: httpx.AsyncClient, database: Database, fake: FakeVod
) -> None:
    async with database.write() as session:  # the claim's INSERT now fails
        await session.execute(text("ALTER TABLE submissions RENAME TO submissions_away"))
    try:
        response = await api.post("/jobs", json={"media_id": "m1", "types": ["AIVideoTag"]})
    finally:
        async with database.write() as session:
            await session.execute(text("ALTER TABLE submissions_away RENAME TO submissions"))
    assert response.status_code == 503
    assert response.json()["error"] == "database_unavailable"
    assert fake.submit_calls == 0


async def test_post_jobs_without_vod_credentials_is_503(client: httpx.AsyncClient) -> None:
    response = await client.post("/jobs", json={"media_id": "m1", "types": ["AIVideoTag"]})
    assert response.status_code == 503
    assert response.json()["error"] == "vod_not_configured"


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)
BODIES = (
    st.fixed_dictionaries(
        {},
        optional={
            "media_id": st.one_of(
                st.sampled_from(["m1", "m2", " m3 "]), st.text(max_size=140), JSON_VALUES
            ),
            "types": st.one_of(
                st.lists(st.sampled_from([*BOTH, "AIVideoCover", ""]), max_size=3),
                st.sampled_from(["AIVideoTag", "AIVideoTag,AIMediaDNA", "x", ""]),
                JSON_VALUES,
            ),
            "config": JSON_VALUES,
            "user_data": st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "Extend": st.one_of(st.text(max_size=300), JSON_VALUES),
                        "MessageCallback": st.one_of(
                            st.fixed_dictionaries({"CallbackURL": st.text(max_size=20)}),
                            JSON_VALUES,
                        ),
                    },
                ),
                JSON_VALUES,
            ),
            "force": JSON_VALUES,
        },
    )
    | JSON_VALUES
)


@given(body=BODIES)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_post_jobs_never_fails_on_any_body(api: httpx.AsyncClient, body: Any) -> None:
    # json=None sends no body at all, hence no JSON Content-Type: a 415.
    content = json.dumps(body).encode() if body is not None else b"null"
    response = await api.post("/jobs", content=content, headers=JSON_TYPE)
    event(f"HTTP {response.status_code}")
    assert response.status_code in (200, 201, 400), response.text
    answer = response.json()
    if response.status_code == 400:
        assert answer["error"] in ("bad_request", "invalid_submission")
        assert answer["message"]
    else:
        assert answer["jobs"]
        assert all(job["state"] == "processing" for job in answer["jobs"])


# --- batches ------------------------------------------------------------------------------------


def test_read_items_parses_lines_and_csv() -> None:
    lines = [
        "media_id,types",
        "m1",
        "# a comment",
        "",
        'm2,"AIVideoTag,AIMediaDNA"',
        "m3,AIMediaDNA",
        "m1,AIMediaDNA",
    ]
    assert read_items(lines, ("AIVideoTag",)) == [
        Item("m1", BOTH),
        Item("m2", BOTH),
        Item("m3", ("AIMediaDNA",)),
    ]
    with pytest.raises(BadRequest) as caught:
        read_items(["m1,Bogus", "m2", "bad id,AIVideoTag"], None, source="f.csv")
    message = caught.value.message
    assert "f.csv:1: types: unknown Bogus" in message
    assert "f.csv:2: no types" in message
    assert "f.csv:3: media_id" in message


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


async def test_dry_run_reports_without_calling_or_writing(
    database: Database, vod: VodClient, fake: FakeVod, clock: FrozenClock
) -> None:
    await submit_media(database, vod, SubmitRequest("m1", ("AIVideoTag",)), clock)
    out = Lines()
    items = [Item("m1", BOTH), Item("m2", ("AIMediaDNA",))]
    tally = await dry_run(database, items, PlainReporter(out, dry_run=True), force=False)
    assert tally.jobs == {TypeOutcome.SUBMITTED: 2, TypeOutcome.SKIPPED: 1}
    assert "skipped m1 AIVideoTag already processing" in out.lines
    assert "would-submit m1 AIMediaDNA would submit" in out.lines
    assert "would-submit m2 AIMediaDNA would submit" in out.lines
    assert fake.submit_calls == 1
    assert len(await jobs_of(database)) == 1


async def test_batch_of_1000_with_throttling_and_refusals(
    database: Database, vod: VodClient, fake: RefusingVod, clock: FrozenClock
) -> None:
    media = [f"media-{i:04d}" for i in range(1000)]
    fake.refuse = set(media[::20])  # 5%
    fake.throttle_every = 5  # VOD throttles; the client and the submitter wait it out
    out = Lines()
    tally = await run_batch(
        database,
        vod,
        [Item(m, BOTH) for m in media],
        clock,
        PlainReporter(out),
        concurrency=32,
        throttle_pause=0.2,
    )
    assert fake.refused.get("Throttling.User", 0) > 0, "the test must exercise throttling"
    assert tally.media == 1000
    assert tally.jobs == {TypeOutcome.SUBMITTED: 1900, TypeOutcome.FAILED: 100}
    assert tally.reasons == {(TypeOutcome.FAILED, "Forbidden.RAM"): 100}
    failed_lines = [line for line in out.lines if line.startswith("failed ")]
    assert len(failed_lines) == 50
    assert all("Forbidden.RAM" in line and "RequestId" in line for line in failed_lines)

    # The truth: one SubmitAIJob per accepted media, one VOD job per media and type.
    assert fake.submit_calls == 950
    assert set(truth(fake).values()) == {1}
    jobs = await jobs_of(database)
    assert Counter((j.media_id, j.type) for j in jobs) == {(m, t): 1 for m in media for t in BOTH}
    for job in jobs:
        if job.media_id in fake.refuse:
            assert (job.state, job.code) == (JobState.SUBMIT_FAILED, "Forbidden.RAM")
        else:
            assert job.state == JobState.PROCESSING
            assert job.job_id is not None
            assert (fake.jobs[job.job_id].media_id, fake.jobs[job.job_id].type) == (
                job.media_id,
                job.type,
            )


async def test_two_batches_at_once_submit_each_media_once(
    database_url: str, vod: VodClient, fake: FakeVod, clock: FrozenClock
) -> None:
    items = [Item(f"m{i}", BOTH) for i in range(200)]
    databases = [Database(database_url), Database(database_url)]
    try:
        tallies = await asyncio.gather(
            *(
                run_batch(db, vod, items, clock, PlainReporter(Lines()), concurrency=8)
                for db in databases
            )
        )
    finally:
        for db in databases:
            await db.dispose()
    assert fake.submit_calls == 200
    assert set(truth(fake).values()) == {1}
    assert sum(t.jobs[TypeOutcome.SUBMITTED] for t in tallies) == 400
    assert sum(t.jobs[TypeOutcome.SKIPPED] for t in tallies) == 400


# --- interrupting `tracker submit` --------------------------------------------------------------


async def _run_cli(
    settings_env: dict[str, str],
    path: Path,
    *,
    stop_after: int | None,
    sig: int,
    database: Database,
) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracker",
        "submit",
        "--types",
        ",".join(BOTH),
        "--from-file",
        str(path),
        "--concurrency",
        "8",
        env=settings_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    if stop_after is not None:
        async with asyncio.timeout(60):
            while True:
                async with database.session() as session:
                    done = await session.scalar(
                        select(func.count()).select_from(Job).where(Job.state == "processing")
                    )
                if (done or 0) >= stop_after:
                    break
                await asyncio.sleep(0.05)
        process.send_signal(sig)
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
async def test_an_interrupted_batch_resumes_with_only_what_is_left(
    sig: int, database_url: str, database: Database, fake: FakeVod, tmp_path: Path
) -> None:
    media = [f"media-{i:03d}" for i in range(300)]
    path = tmp_path / "media.txt"
    path.write_text("\n".join(media) + "\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "ALIBABA_"))},
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_VOD_ENDPOINT": fake.url,
        "TRACKER_VOD_RATE_LIMIT": "150",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
    }
    code, output = await _run_cli(env, path, stop_after=100, sig=sig, database=database)
    assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL), output
    # A killed client's last COMMIT may still land on the server: wait until nothing changes.
    after_kill = await jobs_of(database)
    for _ in range(20):
        await asyncio.sleep(0.25)
        again = await jobs_of(database)
        if [(j.id, j.state) for j in again] == [(j.id, j.state) for j in after_kill]:
            break
        after_kill = again
    first_calls = fake.submit_calls
    assert 50 <= first_calls < 300
    started = {job.media_id for job in after_kill}
    if sig == signal.SIGINT:
        # Stopped cleanly: everything started was recorded, nothing left in flight.
        assert {job.state for job in after_kill} == {JobState.PROCESSING}
        assert "interrupted" in output
    else:
        # Killed: at most the in-flight ones are left `submitting` (unknown to us).
        assert sum(job.state == JobState.SUBMITTING for job in after_kill) <= 2 * 8

    code, output = await _run_cli(env, path, stop_after=None, sig=sig, database=database)
    assert code == 0, output
    assert fake.submit_calls - first_calls == len(set(media) - started)
    jobs = await jobs_of(database)
    assert Counter((j.media_id, j.type) for j in jobs) == {(m, t): 1 for m in media for t in BOTH}
    assert set(truth(fake).values()) == {1}
    assert f"{len(started) * 2} skipped" in output


# --- heavier variants: `pytest -m slow` ---------------------------------------------------------


@pytest.mark.slow
async def test_big_batch_against_the_simulators_own_throttling_and_slow_answers(
    database_url: str, database: Database, fake: RefusingVod, clock: FrozenClock
) -> None:
    media = [f"media-{i:05d}" for i in range(2000)]
    fake.refuse = set(media[::20])
    fake.faults.qps = 50  # VOD's token bucket, well under what the client would send
    fake.faults.slow_rate, fake.faults.slow_seconds = 0.005, 2.0
    settings = vod_settings(database_url, fake.url, vod_timeout=timedelta(seconds=1))
    async with VodClient(settings) as client:
        tally = await run_batch(
            database,
            client,
            [Item(m, BOTH) for m in media],
            clock,
            PlainReporter(Lines()),
            concurrency=48,
            throttle_pause=0.5,
        )
    assert fake.refused.get("Throttling.User", 0) > 0
    jobs = await jobs_of(database)
    assert Counter((j.media_id, j.type) for j in jobs) == {(m, t): 1 for m in media for t in BOTH}
    assert set(truth(fake).values()) == {1}
    unknown = {j.media_id for j in jobs if j.state == JobState.SUBMIT_UNKNOWN}
    assert tally.jobs[TypeOutcome.UNKNOWN] == 2 * len(unknown)
    assert tally.jobs[TypeOutcome.FAILED] == 200
    # Every media VOD has a job for is either recorded with its JobId or `submit_unknown`.
    for job in jobs:
        if job.state == JobState.PROCESSING:
            assert job.job_id in fake.jobs
        else:
            assert job.state in (JobState.SUBMIT_FAILED, JobState.SUBMIT_UNKNOWN)


@pytest.mark.slow
async def test_two_submit_commands_on_one_file(
    database_url: str, database: Database, fake: FakeVod, tmp_path: Path
) -> None:
    media = [f"media-{i:04d}" for i in range(1500)]
    path = tmp_path / "media.csv"
    path.write_text("media_id,types\n" + "".join(f'{m},"{",".join(BOTH)}"\n' for m in media))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "ALIBABA_"))},
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_VOD_ENDPOINT": fake.url,
        "TRACKER_VOD_RATE_LIMIT": "5000",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
    }
    argv = [sys.executable, "-m", "tracker", "submit", "--from-file", str(path)]
    processes = [
        await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        for _ in range(2)
    ]
    async with asyncio.timeout(300):
        outputs = [(await p.communicate())[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert fake.submit_calls == len(media)
    assert set(truth(fake).values()) == {1}
    jobs = await jobs_of(database)
    assert Counter((j.media_id, j.type) for j in jobs) == {(m, t): 1 for m in media for t in BOTH}


async def test_a_second_ctrl_c_abandons_the_calls_in_flight_as_submit_unknown(
    database_url: str, database: Database, fake: FakeVod, tmp_path: Path
) -> None:
    fake.faults.slow_rate, fake.faults.slow_seconds = (
        1.0,
        4.0,
    )  # VOD does the work, then answers late
    path = tmp_path / "media.txt"
    path.write_text("".join(f"media-{i}\n" for i in range(20)))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "ALIBABA_"))},
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_VOD_ENDPOINT": fake.url,
        "TRACKER_VOD_TIMEOUT": "30s",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
    }
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "tracker", "submit", "--types", "AIMediaDNA"],
        *["--from-file", str(path), "--concurrency", "4"],
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    for _ in range(600):  # all four in flight: VOD holds their answers
        if fake.submit_calls >= 4:
            break
        await asyncio.sleep(0.05)
    process.send_signal(signal.SIGINT)
    await asyncio.sleep(0.3)
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(10):  # well before VOD's late answers
        output, _ = await process.communicate()
    assert process.returncode == 130, output.decode()
    jobs = await jobs_of(database)
    assert len(jobs) == 4
    assert {(j.state, j.job_id) for j in jobs} == {(JobState.SUBMIT_UNKNOWN, None)}
    assert "unknown" in output.decode()
    assert fake.submit_calls == 4  # VOD has them: a callback will resolve each one
