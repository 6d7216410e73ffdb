"""What VOD answers, parsed leniently into typed results (sections 2, 3)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tracker.vod.signing import parse_vod_time

JOB_TYPES = ("AIVideoTag", "AIMediaDNA")
LIST_LIMIT = 10  # ListAIJob takes at most 10 JobIds (section 3.1)


@dataclass(frozen=True)
class AIJob:
    job_id: str
    media_id: str
    type: str


@dataclass(frozen=True)
class SubmitResult:
    request_id: str
    jobs: list[AIJob]

    def job_ids(self) -> dict[str, str]:
        """Type -> JobId of each job VOD named with both; a job without either is no answer
        for any type (section 2: one AIJob per requested type)."""
        return {job.type: job.job_id for job in self.jobs if job.job_id and job.type}


def parse_json_string(value: Any) -> Any:
    """VOD nests JSON as strings (`Data`); empty means None, unparseable stays the raw string."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


@dataclass(frozen=True)
class AIJobStatus:
    job_id: str
    media_id: str
    type: str
    status: str  # lower-cased: success | fail | init | processing
    code: str | None
    message: str | None
    data: Any
    creation_time: datetime | None
    complete_time: datetime | None

    @classmethod
    def from_vod(cls, item: Mapping[str, Any]) -> AIJobStatus:
        return cls(
            job_id=str(item.get("JobId", "")),
            media_id=str(item.get("MediaId", "")),
            type=str(item.get("Type", "")),
            status=str(item.get("Status", "")).lower(),
            code=opt_str(item.get("Code")),
            message=opt_str(item.get("Message")),
            data=parse_json_string(item.get("Data")),
            creation_time=parse_vod_time(item.get("CreationTime")),
            complete_time=parse_vod_time(item.get("CompleteTime")),
        )


@dataclass(frozen=True)
class ListResult:
    request_id: str
    jobs: list[AIJobStatus]
    missing: list[str]  # NonExistAIJobIds


def opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def as_list(container: Any, key: str) -> list[Any]:
    """`{"AIJob": [...]}` -> list; tolerates a single object or a missing wrapper."""
    if isinstance(container, Mapping):
        container = container.get(key, [])
    if container is None:
        return []
    return list(container) if isinstance(container, list) else [container]


def missing_ids(body: Mapping[str, Any]) -> list[str]:
    # One doc sample puts a JSON-array string inside the list (section 3.1): flatten leniently.
    ids: list[str] = []
    for item in as_list(body.get("NonExistAIJobIds"), "String"):
        parsed = parse_json_string(item) if isinstance(item, str) else item
        if isinstance(parsed, list):
            ids.extend(str(x) for x in parsed)
        elif isinstance(item, str):
            ids.extend(part.strip() for part in item.split(",") if part.strip())
    return ids
