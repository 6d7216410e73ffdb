"""`tracker vod callback show|set` against the simulator's Get/SetMessageCallback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from click.testing import CliRunner, Result
from pydantic import SecretStr

from tracker.cli import main
from tracker.config import Settings
from tracker.fakevod import FakeVod, Faults
from tracker.vod.callback import check_callback, covers_ai_events, plan_callback

AK, SECRET = "LTAIcallbackcheck", "CallbackCheckSecret"
OURS, OLD = "OurKey2026new", "OurKey2025old"
URL = "https://tracker.example.com/callbacks/vod"


@pytest.fixture
async def fake() -> AsyncIterator[FakeVod]:
    vod = FakeVod(access_key_id=AK, access_key_secret=SECRET, faults=Faults(delay=0.05))
    await vod.start()
    yield vod
    await vod.stop()


async def cli(fake: FakeVod, *args: str, answer: str | None = None) -> Result:
    env = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": AK,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
        "TRACKER_VOD_ENDPOINT": fake.url,
        "TRACKER_CALLBACK_URL": URL,
        "TRACKER_CALLBACK_AUTH_KEY": f"{OURS},{OLD}",
    }
    # The command runs its own event loop; the simulator keeps serving on this one.
    return await asyncio.to_thread(
        CliRunner().invoke, main, ["vod", "callback", *args], input=answer, env=env
    )


@pytest.mark.parametrize(
    ("value", "covered"),
    [
        ("AIComplete", True),
        ("ALL", True),
        ("FileUploadComplete, AIComplete", True),
        ("AIVideoTagComplete,AIMediaDNAComplete", True),
        ("AIVideoTagComplete", False),
        ("", False),
        ("TranscodeComplete", False),
    ],
)
def test_covers_ai_events(value: str, covered: bool) -> None:
    assert covers_ai_events(value) is covered


def test_plan_keeps_other_events_and_rotates_to_the_first_key() -> None:
    settings = Settings(callback_url=URL, callback_auth_key=[SecretStr(OURS), SecretStr(OLD)])
    current = {"EventTypeList": "FileUploadComplete", "AuthKey": OLD, "AuthSwitch": "on"}
    plan = plan_callback(current, settings)
    assert plan == {
        "CallbackType": "HTTP",
        "CallbackURL": URL,
        "EventTypeList": "FileUploadComplete,AIComplete",
        "AuthSwitch": "on",
        "AuthKey": OURS,
    }
    # The old key still passes the check during a rotation.
    checks = {c.field: c for c in check_callback({**plan, "AuthKey": OLD}, settings)}
    assert checks["AuthKey"].ok
    assert checks["AuthKey"].current == "our key #2"


async def test_show_reports_a_mismatch(fake: FakeVod) -> None:
    fake.callback_url = "http://elsewhere.example.com/hook"
    fake.auth_key = "SomebodyElse9"
    result = await cli(fake, "show")
    assert result.exit_code == 1, result.output
    assert "DIFF  CallbackURL    http://elsewhere.example.com/hook  (want " + URL in result.output
    assert "DIFF  AuthKey        another key" in result.output
    assert "ok    EventTypeList  AIComplete" in result.output
    assert "SomebodyElse9" not in result.output
    assert OURS not in result.output


async def test_set_then_show_matches(fake: FakeVod) -> None:
    fake.message_callback["EventTypeList"] = "FileUploadComplete"
    refused = await cli(fake, "set", answer="n\n")
    assert refused.exit_code == 1
    assert "CallbackURL    (empty)  (-> " + URL in refused.output
    assert fake.callback_url is None  # nothing applied without a yes

    applied = await cli(fake, "set", answer="y\n")
    assert applied.exit_code == 0, applied.output
    assert OURS not in applied.output
    assert fake.message_callback["CallbackURL"] == URL
    assert fake.message_callback["AuthKey"] == OURS
    assert fake.message_callback["AuthSwitch"] == "on"
    assert fake.message_callback["EventTypeList"] == "FileUploadComplete,AIComplete"

    shown = await cli(fake, "show")
    assert shown.exit_code == 0, shown.output
    assert "DIFF" not in shown.output
    again = await cli(fake, "set", "--yes")
    assert "nothing to change" in again.output


async def test_set_refuses_a_key_vod_would_refuse(fake: FakeVod) -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["vod", "callback", "set", "--yes"],
        env={
            "ALIBABA_CLOUD_ACCESS_KEY_ID": AK,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
            "TRACKER_VOD_ENDPOINT": fake.url,
            "TRACKER_CALLBACK_URL": URL,
            "TRACKER_CALLBACK_AUTH_KEY": "lowercaseonly",
        },
    )
    assert result.exit_code == 1
    assert "InvalidParameter" in result.output
    assert "lowercaseonly" not in result.output


def test_without_credentials() -> None:
    result = CliRunner().invoke(main, ["vod", "callback", "show"], env={})
    assert result.exit_code == 1
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in result.output
