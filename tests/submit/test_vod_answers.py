"""What VOD would refuse is refused before the call; what VOD answers is believed only as far as
it goes: an answer without a JobId is `submit_unknown`, a local failure `submit_failed`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from tests.processes import run_tracker
from tracker.app import create_app
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.db import Database
from tracker.errors import BadRequest
from tracker.fakevod import FakeVod, Faults
from tracker.models import Job, JobState
from tracker.submit.claims import SubmitRequest
from tracker.submit.service import ClaimFailed, TypeOutcome, submit_media
from tracker.submit.validate import validate_request
from tracker.vod import PARAMETER_LIMIT, VodClient, VodError

KEY, SECRET = "test-key-id", "test-key-secret"
BEARER = {"Authorization": "Bearer t0ken"}
SURROGATE = "\ud800"  # a lone surrogate: valid in a Python str and in JSON text, not in UTF-8


class OddVod(FakeVod):
    """Answers SubmitAIJob 200 with `answer` instead of the jobs (None: as VOD does)."""

    answer: dict[str, Any] | None = None

    def _submit(self, params: Mapping[str, str]) -> dict[str, Any]:
        if self.answer is None:
            return super()._submit(params)
        self.submit_calls += 1
        return self.answer


@pytest.fixture
async def fake() -> AsyncIterator[OddVod]:
    async with OddVod(
        access_key_id=KEY, access_key_secret=SECRET, faults=Faults(delay=0.2)
    ) as simulator:
        yield simulator


def vod_settings(database_url: str, fake: FakeVod, **more: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "scheduler": "off",
        "vod_endpoint": fake.url,
        "access_key_id": KEY,
        "access_key_secret": SECRET,
        "vod_rate_limit": 5000.0,
        "vod_timeout": timedelta(seconds=2),
        "vod_retries": 0,
    }
    return Settings(**(values | more))


@pytest.fixture
async def api(
    database_url: str, fake: FakeVod, clock: FrozenClock
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(vod_settings(database_url, fake, api_tokens="t0ken"), clock=clock)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=BEARER
        ) as http:
            yield http


async def job_count(database: Database) -> int:
    async with database.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Job)) or 0)


async def states(database: Database) -> dict[str, str]:
    async with database.session() as session:
        return {job.type: job.state for job in await session.scalars(select(Job))}


# --- defect 4: text that cannot be encoded ------------------------------------------------------


@pytest.mark.parametrize("field", ["config", "user_data"])
async def test_a_lone_surrogate_is_refused_before_anything_is_claimed(
    api: httpx.AsyncClient, database: Database, fake: FakeVod, field: str
) -> None:
    body = '{"media_id": "m1", "types": ["AIVideoTag"], "FIELD": {"Extend": "\\ud800"}}'
    body = body.replace("FIELD", field)
    response = await api.post("/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_submission"
    assert "UTF-8" in response.json()["message"]
    assert await job_count(database) == 0
    assert fake.submit_calls == 0


@pytest.mark.parametrize(
    "config",
    [{"AIVideoTag": {"AnalyseTypes": SURROGATE}}, {"AIVideoTag": {"x": "y" * PARAMETER_LIMIT}}],
    ids=["surrogate", "too-large"],
)
async def test_a_request_that_cannot_be_sent_is_submit_failed_not_unknown(
    database: Database,
    database_url: str,
    fake: FakeVod,
    clock: FrozenClock,
    config: dict[str, Any],
) -> None:
    """Past validation (a caller of the service that skipped it), the client refuses to build
    the request: nothing was sent, so nothing exists at VOD and nothing is blocked."""
    request = SubmitRequest("m1", ("AIVideoTag",), config)
    async with VodClient(vod_settings(database_url, fake)) as vod:
        try:
            done = await submit_media(database, vod, request, clock)
        except ClaimFailed:
            # PostgreSQL cannot even store such text, so the claim fails first: nothing sent.
            assert database.url.get_backend_name() == "postgresql"
            assert SURROGATE in json.dumps(config, ensure_ascii=False)
            assert fake.submit_calls == 0
            return
    assert done.outcomes == {"AIVideoTag": TypeOutcome.FAILED}
    assert await states(database) == {"AIVideoTag": JobState.SUBMIT_FAILED}
    assert fake.submit_calls == 0


# --- defect 14: what VOD refuses is refused here ------------------------------------------------


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ('{"x": NaN}', "NaN"),
        ('{"x": Infinity}', "NaN"),
        ('{"x": 1e999}', "NaN"),
        ({"AIVideoTag": {"AnalyseTypes": "x" * PARAMETER_LIMIT}}, "bytes"),
        ('{"a":' * 2000 + "1" + "}" * 2000, "nested"),
    ],
    ids=["nan", "infinity", "overflow", "too-large", "deep"],
)
def test_configs_vod_would_refuse_are_refused_first(config: Any, fragment: str) -> None:
    with pytest.raises(BadRequest) as caught:
        validate_request("m1", "AIVideoTag", config, None, region="cn-shanghai")
    assert fragment in caught.value.message


async def test_a_2_mb_config_is_refused_without_calling_vod(
    api: httpx.AsyncClient, database: Database, fake: FakeVod
) -> None:
    big = {"media_id": "m1", "types": ["AIVideoTag"], "config": {"x": "y" * 2_000_000}}
    assert (await api.post("/jobs", json=big)).status_code == 413
    large = {"media_id": "m1", "types": ["AIVideoTag"], "config": {"x": "y" * 3000}}
    refused = await api.post("/jobs", json=large)
    assert refused.status_code == 400
    assert refused.json()["limit"] == PARAMETER_LIMIT
    assert await job_count(database) == 0
    assert fake.submit_calls == 0


@pytest.mark.parametrize(
    ("config", "what"),
    [("{" + '"x":"' + "y" * 2_000_000 + '"}', "too large"), ('{"x": NaN}', "not JSON")],
    ids=["2-mb", "nan"],
)
# aiohttp warns about any request body over 1 MiB (it would rather stream it); here that is the
# point.
@pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")
async def test_the_simulator_refuses_as_vod_does(
    database_url: str, fake: FakeVod, config: str, what: str
) -> None:
    """A refusal (400 InvalidParameter, VOD's error shape): nothing created, so the client says
    VodError, which is submit_failed; never a 500, which would say "may have been created"."""
    async with VodClient(vod_settings(database_url, fake)) as vod:
        with pytest.raises(VodError) as caught:
            await vod.call(
                "SubmitAIJob", {"MediaId": "m1", "Types": "AIVideoTag", "Config": config}
            )
    assert caught.value.http_status == 400, what
    assert caught.value.vod_code == "InvalidParameter"
    assert not fake.jobs


# --- defect 5: a success that names no job ------------------------------------------------------

ODD_ANSWERS = {
    "empty": {},
    "no-jobs": {"AIJobList": {"AIJob": []}},
    "no-type": {"AIJobList": {"AIJob": [{"JobId": "0123456789abcdef0123456789abcdef"}]}},
    "no-job-id": {"AIJobList": {"AIJob": [{"MediaId": "m1", "Type": "AIVideoTag"}]}},
    "error-code": {"Code": "InvalidParameter", "Message": "The specified parameter is not valid."},
}


@pytest.mark.parametrize("answer", ODD_ANSWERS.values(), ids=ODD_ANSWERS.keys())
async def test_post_jobs_never_says_created_without_a_job_id(
    api: httpx.AsyncClient, database: Database, fake: OddVod, answer: dict[str, Any]
) -> None:
    fake.answer = answer
    response = await api.post("/jobs", json={"media_id": "m1", "types": ["AIVideoTag"]})
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["error"] == "vod_answer_unclear"
    assert body["RequestId"]
    assert [job["state"] for job in body["jobs"]] == ["submit_unknown"]
    assert await states(database) == {"AIVideoTag": JobState.SUBMIT_UNKNOWN}
    assert fake.submit_calls == 1


async def test_one_type_answered_and_one_not(
    api: httpx.AsyncClient, database: Database, fake: OddVod
) -> None:
    job_id = "0123456789abcdef0123456789abcdef"
    fake.answer = {"AIJobList": {"AIJob": [{"JobId": job_id, "Type": "AIVideoTag"}]}}
    response = await api.post(
        "/jobs", json={"media_id": "m1", "types": ["AIVideoTag", "AIMediaDNA"]}
    )
    assert response.status_code == 502
    assert "AIMediaDNA" in response.json()["message"]
    assert await states(database) == {
        "AIVideoTag": JobState.PROCESSING,
        "AIMediaDNA": JobState.SUBMIT_UNKNOWN,
    }


@pytest.mark.parametrize("answer", ODD_ANSWERS.values(), ids=ODD_ANSWERS.keys())
async def test_tracker_submit_counts_them_unknown_and_fails(
    database_url: str, fake: OddVod, answer: dict[str, Any]
) -> None:
    fake.answer = answer
    env = {
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_VOD_ENDPOINT": fake.url,
        "TRACKER_VOD_RETRIES": "0",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
    }
    done = await asyncio.to_thread(run_tracker, "submit", "--types", "AIVideoTag", "m1", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "0 jobs submitted" in done.stdout, done.stdout
    assert "1 unknown" in done.stdout, done.stdout
    assert "MissingJobId" in done.stdout or "InvalidParameter" in done.stdout, done.stdout
