"""What VOD answers, parsed leniently into typed results (sections 2, 3)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tracker.db import MAX_JSON_DEPTH, too_deep
from tracker.vod.signing import parse_vod_time

JOB_TYPES = ("AIVideoTag", "AIMediaDNA")
# The completion event of each job type (section 6.1). VOD sends others under the same
# subscription (AIMediaAuditComplete): they are no job of ours.
EVENT_TYPES = {f"{job_type}Complete": job_type for job_type in JOB_TYPES}
LIST_LIMIT = 10  # ListAIJob takes at most 10 JobIds (section 3.1)
ID_LIMIT = 128  # the width of the id columns
# VOD's JobIds and MediaIds are 32 hex digits, and its documented samples mask the last four
# with `*` (sections 2, 6.2). The rules are lenient beyond that (any letter, `_ - .`), but keep
# out what breaks a use of the id: `,` splits ListAIJob's JobIds list (section 3.1), `/ ? # %`
# and a leading dot change a URL path, and spaces, quotes and control characters mislead logs.
# A MediaId may also hold what `POST /jobs` accepts (tracker/submit/validate.py).
JOB_ID = re.compile(rf"[A-Za-z0-9_*-][A-Za-z0-9_.*-]{{0,{ID_LIMIT - 1}}}", re.ASCII)
MEDIA_ID = re.compile(rf"[A-Za-z0-9_*:@=+-][A-Za-z0-9_.*:@=+-]{{0,{ID_LIMIT - 1}}}", re.ASCII)


def is_job_id(value: object) -> bool:
    """Whether `value` has the shape of a VOD JobId (see JOB_ID)."""
    return isinstance(value, str) and JOB_ID.fullmatch(value) is not None


def is_media_id(value: object) -> bool:
    """Whether `value` has the shape of a VOD MediaId (see MEDIA_ID)."""
    return isinstance(value, str) and MEDIA_ID.fullmatch(value) is not None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"{literal[:20]} overflows a number")
    return value


# Built once: json.loads with any option builds a decoder (and its scanner) on every call,
# which cost the webhook a tenth of its parsing.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite)


def parse_json(text: str | bytes) -> Any:
    """JSON as RFC 8259 has it: NaN, Infinity and numbers beyond a double (`1e999`) raise
    ValueError, like any other syntax error. Python's own parser takes them, but no JSON
    column of PostgreSQL, no JSON response and no other client can hold them. Nesting deeper
    than MAX_JSON_DEPTH raises ValueError too (RFC 8259 lets a parser bound it): whatever the
    tracker stores must render on every read path, each of which recurses once per level."""
    shown = text if isinstance(text, str) else text.decode("utf-8", "replace")
    if too_deep(shown, MAX_JSON_DEPTH):
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(text, str):  # bytes in any UTF, as json.loads takes them
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    if text.startswith("\ufeff"):  # json.loads refuses a BOM in a str: so does this
        raise json.JSONDecodeError("Unexpected UTF-8 BOM", text, 0)
    return _DECODER.decode(text)


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
    """VOD nests JSON as strings (`Data`); empty means None, unparseable (NaN and Infinity
    included: `parse_json`) stays the raw string."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        return parse_json(value)
    except (ValueError, RecursionError):
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


# --- looking jobs up by media (../shared/vod-joblookup-reference.md) ----------------------------


@dataclass(frozen=True)
class JobInfo:
    """One item of ListJobInfo's `JobInfoList`: no MediaId and no AI type (joblookup 1)."""

    job_id: str
    status: str  # lower-cased; for AI jobs undocumented [U]
    create_time: datetime | None
    complete_time: datetime | None

    @classmethod
    def from_vod(cls, item: Mapping[str, Any]) -> JobInfo:
        return cls(
            job_id=str(item.get("JobId", "")),
            status=str(item.get("Status", "")).lower(),
            create_time=parse_vod_time(item.get("CreateTime")),
            complete_time=parse_vod_time(item.get("CompleteTime")),
        )


def job_infos(body: Mapping[str, Any]) -> list[JobInfo]:
    """`JobInfoList` is a flat array [V]; a `{"JobInfo": [...]}` wrapper like ListAIJob's, a
    single object or a missing list are read too. Items without a JobId are skipped."""
    value = body.get("JobInfoList")
    items = (
        [value] if isinstance(value, Mapping) and "JobId" in value else as_list(value, "JobInfo")
    )
    infos = [JobInfo.from_vod(item) for item in items if isinstance(item, Mapping)]
    return [info for info in infos if info.job_id]


@dataclass(frozen=True)
class AIJobDetail:
    """GetJobDetail's `AIJobDetail` (joblookup 2). `type` is the AI subtype (`AIVideoTag`,
    `AIMediaDNA`, `AIVideoCensor`...); `trigger` is `Manual` for API submissions, `Auto` for
    workflow jobs."""

    job_id: str
    type: str
    media_id: str
    status: str  # lower-cased: reserved | init | processing | analysing | success | fail
    trigger: str | None
    create_time: datetime | None
    complete_time: datetime | None

    @classmethod
    def from_vod(cls, item: Mapping[str, Any]) -> AIJobDetail:
        return cls(
            job_id=str(item.get("JobId", "")),
            type=str(item.get("JobType", "")),
            media_id=str(item.get("MediaId", "")),
            status=str(item.get("Status", "")).lower(),
            trigger=opt_str(item.get("Trigger")),
            create_time=parse_vod_time(item.get("CreateTime")),
            complete_time=parse_vod_time(item.get("CompleteTime")),
        )


def ai_job_detail(body: Mapping[str, Any]) -> AIJobDetail | None:
    """The `AIJobDetail` block, or None when VOD filled another block or none."""
    detail = body.get("AIJobDetail")
    if not isinstance(detail, Mapping) or not detail.get("JobId"):
        return None
    return AIJobDetail.from_vod(detail)
