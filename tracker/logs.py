"""Log lines as text for people or as one JSON object each for log pipelines (core)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal

from tracker.clock import iso

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: `time` (UTC, ISO 8601 with a `Z`, as every answer shows
    times), `level`, `logger`, `message`, and `exception` (the traceback) when there is one.
    The encoder escapes newlines, so a record is always one line, a traceback included."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": iso(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(log_format: Literal["text", "json"], level: int = logging.INFO) -> None:
    """The root logger's one handler, on stderr, in the chosen format (TRACKER_LOG_FORMAT)."""
    handler = logging.StreamHandler()
    json_lines = log_format == "json"
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
