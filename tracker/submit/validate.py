"""Pure, no database: what VOD would refuse, or bill us for by surprise, refused before sending."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from tracker.config import REGION_LIMIT, REGION_PATTERN
from tracker.errors import BadRequest
from tracker.submit.claims import SubmitRequest
from tracker.vod import (
    ID_LIMIT,
    JOB_TYPES,
    MEDIA_ID,
    PARAMETER_LIMIT,
    VodRequestInvalid,
    json_param,
)

# Where each AI type is offered (vod-reference.md 1.1); each job costs money, so a type the
# configured region lacks is refused here instead of by a bill or an error later.
REGIONS: dict[str, frozenset[str]] = {
    "AIVideoTag": frozenset({"cn-beijing", "cn-shanghai"}),
    "AIMediaDNA": frozenset({"cn-beijing", "cn-shanghai", "ap-southeast-1"}),
}
EXTEND_LIMIT = 512  # bytes of UserData.Extend (vod-reference.md 6.3, 6.6)


class InvalidSubmission(BadRequest):
    code = "invalid_submission"


class TypeNotInRegion(BadRequest):
    code = "type_not_in_region"


def parse_types(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """`AIVideoTag,AIMediaDNA` or a list of them; unknown names are a 400 listing the valid ones."""
    if value is None:
        raise InvalidSubmission("types: required", valid_types=list(JOB_TYPES))
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise InvalidSubmission(
            "types: a list or a comma-separated string", valid_types=list(JOB_TYPES)
        )
    if not all(isinstance(item, str) for item in items):
        raise InvalidSubmission("types: must be strings", valid_types=list(JOB_TYPES))
    types = tuple(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))
    if not types:
        raise InvalidSubmission("types: at least one is required", valid_types=list(JOB_TYPES))
    unknown = [t for t in types if t not in JOB_TYPES]
    if unknown:
        raise InvalidSubmission(
            f"types: unknown {', '.join(unknown)}; valid types are {', '.join(JOB_TYPES)}",
            valid_types=list(JOB_TYPES),
        )
    return types


def parse_json_object(name: str, value: object) -> dict[str, Any] | None:
    """A JSON object given as text (CLI) or already parsed (API body); None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidSubmission(f"{name}: not valid JSON: {exc}") from None
        except RecursionError:
            raise InvalidSubmission(f"{name}: nested too deeply") from None
    if not isinstance(value, dict):
        raise InvalidSubmission(f"{name}: must be a JSON object")
    return value


def check_media_id(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidSubmission("media_id: required")
    media_id = value.strip()
    if not MEDIA_ID.fullmatch(media_id):
        raise InvalidSubmission(
            f"media_id: 1 to {ID_LIMIT} of the characters A-Z a-z 0-9 _ * : @ = + - and ., "
            "not first (VOD's media ids, as callbacks must carry them)"
        )
    return media_id


def check_user_data(user_data: dict[str, Any] | None) -> None:
    """Extend within VOD's 512 bytes; a per-request MessageCallback with an http(s) URL."""
    if not user_data:
        return
    extend = user_data.get("Extend")
    if extend is not None:
        text = extend if isinstance(extend, str) else _compact(extend)
        size = len(text.encode())
        if size > EXTEND_LIMIT:
            raise InvalidSubmission(
                f"user_data.Extend: {size} bytes, VOD allows at most {EXTEND_LIMIT}"
            )
    callback = user_data.get("MessageCallback")
    if callback is not None:
        # VOD accepts the callback as an object or as JSON text (vod-reference.md 6.6).
        parsed = parse_json_object("user_data.MessageCallback", callback)
        url = (parsed or {}).get("CallbackURL")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidSubmission("user_data.MessageCallback.CallbackURL: an http(s) URL")


def check_region(types: Sequence[str], region: object) -> str:
    """A region id that offers every one of `types` (checked per job, before anything is sent)."""
    if (
        not isinstance(region, str)
        or len(region) > REGION_LIMIT
        or not re.fullmatch(REGION_PATTERN, region)
    ):
        raise InvalidSubmission("region: a VOD region id such as cn-shanghai")
    missing = [t for t in types if region not in REGIONS[t]]
    if missing:
        offered = "; ".join(f"{t}: {', '.join(sorted(REGIONS[t]))}" for t in missing)
        raise TypeNotInRegion(
            f"region {region} does not offer {', '.join(missing)} ({offered}); nothing submitted",
            region=region,
        )
    return region


def validate_request(
    media_id: object,
    types: str | Iterable[str] | None,
    config: object = None,
    user_data: object = None,
    *,
    region: object,
) -> SubmitRequest:
    """Everything VOD would refuse, or bill us for by surprise, is refused here first."""
    types = parse_types(types)
    request = SubmitRequest(
        media_id=check_media_id(media_id),
        types=types,
        config=parse_json_object("config", config),
        user_data=parse_json_object("user_data", user_data),
        region=check_region(types, region),
    )
    check_sendable("config", request.config)
    check_sendable("user_data", request.user_data)
    check_user_data(request.user_data)
    return request


def check_sendable(name: str, value: dict[str, Any] | None) -> None:
    """Config and UserData as VOD takes them (tracker.vod.json_param): strict JSON, valid UTF-8,
    at most PARAMETER_LIMIT bytes. Refused here, before a job is claimed, rather than by the
    client after it was."""
    if value is None:
        return
    try:
        json_param(name, value)
    except VodRequestInvalid as exc:
        raise InvalidSubmission(exc.message, limit=PARAMETER_LIMIT) from None


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
