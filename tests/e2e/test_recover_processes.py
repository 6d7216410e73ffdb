"""`tracker fake-vod --lose-submit-rate` and `tracker serve`: a lost answer recovered for real."""

from __future__ import annotations

import os
import re
import time
from typing import Any

import httpx
import pytest

from tests.processes import TrackerProcess

KEY_ID = "LTAIrecover"
KEY_SECRET = "RecoverSecret1"


def jobs_of(url: str, media_id: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/jobs", params={"media_id": media_id}, timeout=5)
    answer.raise_for_status()
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def listening_on(fake: TrackerProcess, seconds: float = 30) -> str:
    """The URL of a simulator started on a free port (`--port 0`), from its startup line."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := re.search(r"^fake VOD listening on (http://\S+) ", fake.log, re.MULTILINE):
            return found.group(1)
        if fake.process.poll() is not None:
            raise AssertionError(f"the simulator exited early:\n{fake.log}")
        time.sleep(0.1)
    raise AssertionError(f"no startup line in {seconds}s:\n{fake.log}")


def test_serve_recovers_a_submission_whose_answer_the_simulator_lost(database_url: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "ALIBABA_"))}
    keys = {"ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": KEY_SECRET}
    # Every answer lost, every callback dropped: only recovery can learn the JobId.
    fake = TrackerProcess(
        *["fake-vod", "--port", "0", "--lose-submit-rate", "1", "--drop-rate", "1"],
        *["--delay", "0.2"],
        env=base | keys,
    )
    serve = None
    try:
        vod_url = listening_on(fake)
        serve = TrackerProcess(
            "serve",
            env=base
            | keys
            | {
                "TRACKER_DATABASE_URL": database_url,
                "TRACKER_VOD_ENDPOINT": vod_url,
                "TRACKER_RECOVER_AFTER": "1s",
                "TRACKER_RECOVER_INTERVAL": "0.5s",
            },
        )
        serve.wait_ready()
        answer = httpx.post(
            f"{serve.url}/jobs", json={"media_id": "m-e2e", "types": ["AIVideoTag"]}, timeout=30
        )
        assert answer.status_code == 504, answer.text
        (job,) = jobs_of(serve.url, "m-e2e")
        assert (job["state"], job["job_id"]) == ("submit_unknown", None)

        deadline = time.monotonic() + 30
        while (job := jobs_of(serve.url, "m-e2e")[0])["job_id"] is None:
            if time.monotonic() > deadline:
                pytest.fail(f"not recovered in 30 s:\n{serve.log}")
            time.sleep(0.2)
        assert job["state"] in ("processing", "succeeded")
        assert "adopted JobId " + job["job_id"] in serve.log
        assert "lose_submit_rate=1.0" in fake.log
    finally:
        if serve is not None:
            serve.stop()
        fake.stop()
