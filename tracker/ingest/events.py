"""What a VOD callback says: bodies parsed into inbox rows, and stored rows into outcomes.

See vod-reference.md section 6 for the bodies. Nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from tracker.transitions import Outcome
from tracker.vod import EVENT_TYPES, is_job_id, is_media_id, parse_json, parse_vod_time

SEP = "\x1f"
# Completion events carry success or fail (vod-reference.md 6.2), in any case.
STATUSES = frozenset({"success", "fail"})
# Why an acknowledged event is left unapplied: not an AI event at all, or the completion of an AI
# job type the tracker does not submit (AIMediaAuditComplete: vod-reference.md 6.1).
NOT_AI_EVENT = "not_ai_event"
UNTRACKED_TYPE = "untracked_ai_type"
JOB_ID_RULE = "1 to 128 of A-Z a-z 0-9 _ - * and . (not first)"
MEDIA_ID_RULE = "1 to 128 of A-Z a-z 0-9 _ - * : @ = + and . (not first)"


def _text(value: Any, limit: int) -> str | None:
    """A storable short string field, or None."""
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        return None
    return value if is_clean(value) else None


def _key(*parts: str, at: datetime | None = None) -> str:
    """A dedup key (64 characters): a hash of `parts`, led by `at` to the second when known.
    Events arrive about in the order of their times, so a new key goes to the end of the unique
    index; a key that is all hash goes to a random page of it, one more page written per event
    by the inbox's commit (and its checkpoint)."""
    digest = hashlib.sha256(SEP.join(parts).encode()).hexdigest()
    if at is None:
        return digest
    stamp = f"{at.year:04d}{at.month:02d}{at.day:02d}{at.hour:02d}{at.minute:02d}{at.second:02d}"
    return stamp + digest[len(stamp) :]


def parse_callback(raw: bytes) -> tuple[dict[str, Any], str | None]:
    """The inbox row for a body, and why it is malformed (None if it is not).

    Dedup key: for an AI completion event, JobId + EventType + Status + EventTime. They name
    the event itself, so VOD's repeated deliveries collapse whatever their JSON spacing or key
    order, while a contradicting event (a `fail` after a `success`) is kept as its own row for
    the record (the state machine ignores it). Any other body: a hash of the body normalised
    (sorted keys, compact), or of the raw bytes when it is not JSON.
    """
    row: dict[str, Any] = {
        "event_type": None,
        "job_id": None,
        "media_id": None,
        "status": None,
        "event_time": None,
        "applied": False,
        "reason": None,
    }
    try:
        text = raw.decode()
        # NaN, Infinity or 1e999 anywhere: not JSON, so malformed; nesting past MAX_JSON_DEPTH
        # too (VOD's bodies are flat, `Data` a string), as no reader could render it.
        body = parse_json(text)
    except (ValueError, RecursionError) as exc:
        deep = "nested" in str(exc)
        return _malformed(row, raw, f"body is not UTF-8 JSON{' of bounded depth' * deep}")
    if not isinstance(body, dict):
        return _malformed(row, raw, "body is not a JSON object")
    # The body is kept as its text (escapes and all); only the fields taken into columns must be
    # storable text (`_text`), and the applier cleans what it copies into the job.
    row["body"] = text
    event_type = _text(body.get("EventType"), 64)
    if event_type is None:
        return _malformed(row, raw, "EventType missing or not a short string", text)
    row["event_type"] = event_type
    # Only ids of VOD's shape enter a column: they travel on into ListAIJob's comma-separated
    # list and into URL paths. Another body keeps any other id in its text.
    job_id = body.get("JobId")
    row["job_id"] = job_id if is_job_id(job_id) else None
    media_id = body.get("MediaId") or body.get("VideoId")
    row["media_id"] = media_id if is_media_id(media_id) else None
    status = _text(body.get("Status"), 32)
    row["status"] = status.lower() if status else None
    raw_time = body.get("EventTime")
    row["event_time"] = parse_event_time(raw_time)

    if event_type not in EVENT_TYPES:
        # Acknowledged (VOD would retry a refusal, then drop it) and stored, never applied: only
        # the job types the tracker submits become jobs, whatever EventType a body names.
        try:
            normal = json.dumps(body, sort_keys=True, separators=(",", ":"))
        except (ValueError, RecursionError):  # nesting json.loads took but dumps refuses
            normal = hashlib.sha256(raw).hexdigest()
        row["dedup_key"] = _key("event", normal, at=row["event_time"])
        row["reason"] = _untracked(event_type)
        return row, None
    if row["job_id"] is None:
        return _malformed(row, raw, f"JobId missing or not a short string of {JOB_ID_RULE}", text)
    if row["status"] not in STATUSES:
        return _malformed(row, raw, "Status must be success or fail", text)
    if body.get("MediaId") is not None and row["media_id"] is None:
        return _malformed(row, raw, f"MediaId not a short string of {MEDIA_ID_RULE}", text)
    when = row["event_time"].isoformat() if row["event_time"] else str(raw_time or "")
    row["dedup_key"] = _key(
        "ai", event_type, row["job_id"], row["status"], when, at=row["event_time"]
    )
    row["applied"] = None  # for the applier
    return row, None


def _malformed(
    row: dict[str, Any], raw: bytes, reason: str, text: str | None = None
) -> tuple[dict[str, Any], str]:
    if text is None:  # keep undecodable bytes readable; PostgreSQL text cannot hold NUL
        text = raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
    row.update(
        dedup_key=_key("raw", hashlib.sha256(raw).hexdigest()),
        body=text,
        applied=False,
        reason=f"malformed: {reason}"[:255],
    )
    return row, reason


def _untracked(event_type: str) -> str:
    is_ai = event_type.startswith("AI") and event_type.endswith("Complete")
    return UNTRACKED_TYPE if is_ai else NOT_AI_EVENT


def not_to_apply(row: Any) -> str | None:
    """Why a stored row must not be applied, None if it may be: the receiver's rules, checked
    again on its columns for rows stored before those rules or handed back by `tracker events
    replay`. Only a tracked event type with a JobId of VOD's shape becomes a job."""
    if row.event_type not in EVENT_TYPES:
        return _untracked(row.event_type or "")
    if not is_job_id(row.job_id) or row.status not in STATUSES:
        return "malformed: JobId or Status not of a completion event"
    if row.media_id is not None and not is_media_id(row.media_id):
        return "malformed: MediaId not of VOD's shape"
    return None


def outcome_of(row: Any) -> Outcome:
    """The Outcome a tracked AI event row carries; `Data` is a JSON string (vod-reference.md
    6.2). Raises ValueError for a body that is not RFC 8259 JSON (stored before the receiver
    refused them) and KeyError for an event type that is not tracked."""
    body = parse_json(row.body)
    return Outcome(
        job_id=row.job_id,
        type=EVENT_TYPES[row.event_type],
        status=row.status,
        media_id=row.media_id,
        code=_short(body.get("Code"), 128),
        message=_short(body.get("Message"), 4000),
        data=parse_data(body.get("Data")),
        event_time=row.event_time,
        completed_at=parse_event_time(body.get("CompleteTime")) or row.event_time,
    )


def parse_data(data: Any) -> Any:
    """VOD sends the result as a JSON string; keep the raw string if it is not clean JSON
    (NaN, Infinity and 1e999 are not, nor nesting deeper than MAX_JSON_DEPTH: `parse_json`),
    so every reader can render what is stored (issue 23, P2)."""
    if not isinstance(data, str):
        return data if is_clean(data) else escape_unstorable(json.dumps(data))
    try:
        parsed = parse_json(data)
    except (ValueError, RecursionError):
        return escape_unstorable(data)
    if data.isascii() and "\\u" not in data:  # no escape can have made a NUL or a surrogate
        return parsed
    return parsed if is_clean(parsed) else escape_unstorable(data)


def escape_unstorable(text: str) -> str:
    """`text` with NUL and unpaired surrogates escaped, so any database takes it."""
    return text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode()


def is_clean(value: Any, depth: int = 0) -> bool:
    """True if every string in `value` is storable text: valid UTF-8, no NUL (PostgreSQL)."""
    if depth > 64:
        return False
    if isinstance(value, str):
        return "\x00" not in value and (value.isascii() or _encodes(value))  # ASCII: common
    if isinstance(value, dict):
        return all(is_clean(k, depth + 1) and is_clean(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(is_clean(item, depth + 1) for item in value)
    return True


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate from a "\\ud800" escape
        return False
    return True


def _short(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    return escape_unstorable(str(value))[:limit]


def parse_event_time(value: Any) -> datetime | None:
    """VOD's EventTime/CompleteTime, leniently (vod-reference.md 6.2); None if not a time."""
    try:
        return parse_vod_time(value)
    except OverflowError:  # e.g. year 1 with a positive offset
        return None
