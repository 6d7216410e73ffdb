"""`tracker serve` with TRACKER_LOG_FORMAT=json writes nothing but JSON lines; a bad value is one
line naming the variable."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.processes import TrackerProcess, run_tracker


def test_serve_logs_one_json_object_per_line(tmp_path: Path) -> None:
    env = {
        "TRACKER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'tracker.db'}",
        "TRACKER_LOG_FORMAT": "json",
        "TRACKER_NOTIFY": "off",
        "TRACKER_CALLBACK_AUTH_KEY": "key",
        "TRACKER_CALLBACK_URL": "http://127.0.0.1/callbacks/vod",
    }
    server = TrackerProcess("serve", env=env)
    try:
        server.wait_ready()
        # An unsigned callback is refused, and the receiver logs a warning.
        assert httpx.post(f"{server.url}/callbacks/vod", content=b"{}").status_code == 401
        server.process.terminate()  # the shutdown lines are logged too
        server.process.wait(15)
        lines = server.log.splitlines()
    finally:
        server.stop()
    assert lines, "nothing logged"
    entries = [json.loads(line) for line in lines]  # each line, whoever wrote it, is JSON
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        assert entry["time"].endswith("Z"), entry
    refused = [e for e in entries if e["logger"] == "tracker.ingest.receiver"]
    assert refused, lines
    assert refused[0]["level"] == "WARNING"
    assert "rejected" in refused[0]["message"]
    assert any(e["logger"].startswith("uvicorn") for e in entries), lines


def test_a_bad_log_format_is_one_line_naming_the_variable() -> None:
    done = run_tracker("serve", env={"TRACKER_LOG_FORMAT": "yaml"})
    output = (done.stdout + done.stderr).strip()
    assert done.returncode != 0
    assert output.splitlines() == [output]
    assert "TRACKER_LOG_FORMAT" in output
    assert "'text' or 'json'" in output
