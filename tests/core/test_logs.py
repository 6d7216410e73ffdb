"""TRACKER_LOG_FORMAT=json: one JSON object per log record, tracebacks included."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from tracker.logs import JsonFormatter


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad <value>\nsecond line")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord(
        "tracker.some.module", logging.WARNING, __file__, 1, message, args, exc_info
    )


def test_a_record_is_one_json_line_with_time_level_logger_and_message() -> None:
    item = record("callback from %s rejected:\n%s", "127.0.0.1", "bad_signature")
    item.created = datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=UTC).timestamp()
    line = JsonFormatter().format(item)
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2026-01-02T03:04:05.250000Z",
        "level": "WARNING",
        "logger": "tracker.some.module",
        "message": "callback from 127.0.0.1 rejected:\nbad_signature",
    }


def test_an_exception_comes_with_its_traceback_on_the_same_line() -> None:
    line = JsonFormatter().format(record("relay: %d attempts not recorded", 3, exc=True))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "relay: 3 attempts not recorded"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ValueError: bad <value>\nsecond line")
    assert "exception" not in json.loads(JsonFormatter().format(record("fine")))


def test_the_time_is_utc_whatever_the_local_zone() -> None:
    item = record("x")
    stamp = json.loads(JsonFormatter().format(item))["time"]
    assert stamp.endswith("Z")
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset() is not None
    assert abs(parsed.timestamp() - item.created) < 1e-3


def test_the_readme_example_is_what_the_formatter_writes() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    [example] = [line for line in readme.splitlines() if line.startswith('{"time": ')]
    shown = json.loads(example)
    item = record("callback from %s rejected: %s", "10.0.0.7", "bad_signature")
    item.name = shown["logger"]
    item.created = datetime.fromisoformat(shown["time"]).timestamp()
    assert JsonFormatter().format(item) == example
