"""Simulator, job model: each AI job's truth, result and callback body (sections 2, 3, 6.2)."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tracker.fakevod.gateway import Refused
from tracker.vod import PARAMETER_LIMIT, format_timestamp

EVENT_TYPES = {"AIVideoTag": "AIVideoTagComplete", "AIMediaDNA": "AIMediaDNAComplete"}
EXTEND_LIMIT = 512  # bytes (section 6.3)


@dataclass
class FakeJob:
    """One simulated AI job: the truth tests compare the tracker against."""

    job_id: str
    media_id: str
    type: str
    status: str = "init"  # init -> processing -> success | fail
    code: str = ""
    message: str = ""
    data: str = ""  # JSON string, as VOD sends it
    creation_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    complete_time: datetime | None = None
    callback_url: str | None = None  # from UserData.MessageCallback
    extend: str | None = None  # UserData.Extend, echoed as a JSON string [U] (section 6.3)
    submitted: bool = True  # False for DNA jobs VOD ran on its own (section 7)
    will_fail: bool = False
    drop: bool = False
    duplicate: bool = False
    late: bool = False
    stuck: bool = False  # stays processing for `stuck_seconds` more (stale-job demos)
    attempts: int = 0  # delivery attempts made
    acknowledged: int = 0  # deliveries answered 200

    @property
    def event_type(self) -> str:
        return EVENT_TYPES[self.type]

    @property
    def final(self) -> bool:
        return self.status in ("success", "fail")

    def list_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "JobId": self.job_id,
            "MediaId": self.media_id,
            "Type": self.type,
            "Status": self.status,
            "CreationTime": format_timestamp(self.creation_time),
        }
        if self.final:
            item.update(Code=self.code, Message=self.message, Data=self.data)
            assert self.complete_time is not None
            item["CompleteTime"] = format_timestamp(self.complete_time)
        return item

    def job_info(self, user_id: int) -> dict[str, Any]:
        """The item of ListJobInfo's `JobInfoList` (joblookup 1): no MediaId, no AI type."""
        item: dict[str, Any] = {
            "JobId": self.job_id,
            "Status": self.status,
            "UserId": user_id,
            "CreateTime": format_timestamp(self.creation_time),
        }
        if self.complete_time is not None:
            item["CompleteTime"] = format_timestamp(self.complete_time)
        return item

    def detail(self, user_id: int) -> dict[str, Any]:
        """GetJobDetail's `AIJobDetail` (joblookup 2); `Trigger` is Auto for DNA VOD ran alone."""
        return {
            **self.job_info(user_id),
            "JobType": self.type,
            "MediaId": self.media_id,
            "Trigger": "Manual" if self.submitted else "Auto",
            "TemplateConfig": "{}",
        }

    def event(self) -> dict[str, Any]:
        """The callback body of section 6.2."""
        assert self.complete_time is not None
        body = {
            "EventTime": format_timestamp(self.complete_time),
            "EventType": self.event_type,
            "JobId": self.job_id,
            "MediaId": self.media_id,
            "Status": self.status,
            "Code": self.code,
            "Message": self.message,
            "Data": self.data,
        }
        if self.type == "AIMediaDNA":
            body["CompleteTime"] = format_timestamp(self.complete_time)
        if self.extend is not None:
            body["Extend"] = self.extend
        return body


@dataclass(frozen=True)
class Delivery:
    """One callback POST attempt."""

    job_id: str
    url: str
    attempt: int
    status: int | None
    error: str | None = None


def draw_result(rng: random.Random, job_type: str) -> str:
    """A result shaped like section 6.2, drawn from the seeded generator."""
    if job_type == "AIMediaDNA":
        matches = []
        if rng.random() < 0.3:
            start = round(rng.uniform(0, 30), 1)
            span = round(rng.uniform(5, 20), 1)
            matches.append(
                {
                    "Similarity": f"{rng.uniform(0.8, 1.0):.2f}",
                    "PrimaryKey": f"{rng.getrandbits(128):032x}",
                    "Detail": [
                        {
                            "Input": {"Start": f"{start}", "Duration": f"{span}"},
                            "Duplication": {"Start": f"{start + 0.5}", "Duration": f"{span}"},
                        }
                    ],
                }
            )
        return json.dumps({"VideoDNA": matches}, separators=(",", ":"))

    def tags(words: list[str]) -> list[dict[str, Any]]:
        return [
            {"Tag": w, "Times": [str(rng.randrange(0, 60000, 10)) for _ in range(2)]}
            for w in rng.sample(words, rng.randint(1, 2))
        ]

    result = {
        "Keyword": tags(["cushion", "sofa", "coffee", "guitar", "bicycle"]),
        "Location": tags(["Asia", "beach", "office", "street"]),
        "Category": [{"Tag": rng.choice(["life", "music", "sports", "travel"])}],
    }
    return json.dumps(result, ensure_ascii=False, separators=(",", ":"))


def json_param(params: Mapping[str, str], name: str) -> Any:
    """Config and UserData: JSON text (section 2), so no NaN or Infinity, and within
    PARAMETER_LIMIT bytes (tracker/vod/client.py says why that bound)."""
    text = params.get(name)
    if not text:
        return None
    if len(text.encode()) > PARAMETER_LIMIT:
        raise Refused(400, "InvalidParameter", f"The specified parameter {name} is too long.")
    try:
        return json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise Refused(
            400, "InvalidParameter", f"The specified parameter {name} is not valid JSON."
        ) from None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def user_data_fields(user_data: Any) -> tuple[str | None, str | None]:
    """UserData.MessageCallback.CallbackURL and Extend; either may be nested JSON text (6.6)."""
    if not isinstance(user_data, dict):
        return None, None
    callback = user_data.get("MessageCallback")
    if isinstance(callback, str):
        try:
            callback = json.loads(callback)
        except ValueError:
            callback = None
    url = callback.get("CallbackURL") if isinstance(callback, dict) else None
    extend = user_data.get("Extend")
    if extend is not None and not isinstance(extend, str):
        extend = json.dumps(extend, ensure_ascii=False, separators=(",", ":"))
    if extend is not None and len(extend.encode()) > EXTEND_LIMIT:
        raise Refused(400, "InvalidParameter", f"UserData.Extend is over {EXTEND_LIMIT} bytes")
    return (str(url) if url else None), extend
