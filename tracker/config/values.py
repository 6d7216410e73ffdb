"""What a setting may hold: durations, database URLs, VOD regions and endpoints, per-type amounts,
and the annotated types that parse them (used by tracker/config/__init__.py's Settings)."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
)
from pydantic_settings import NoDecode
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SHORT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(value: object) -> object:
    """`90s`, `5m`, `2h`, `30d`, `90` (seconds); anything else is left to pydantic (ISO 8601)."""
    if isinstance(value, str) and (match := _SHORT.match(value)):
        try:
            return timedelta(seconds=float(match[1]) * _UNITS[match[2] or "s"])
        except (OverflowError, ValueError):
            raise ValueError(f"{value.strip()} is too long a duration") from None
    return value


# Every time the tracker computes (now - stale_after, now + lease_ttl, ...) must stay inside
# what datetime holds; no setting needs more than a century.
LONGEST = timedelta(days=36525)


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than zero")
    return _bounded(value)


def _bounded(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must not be negative")
    if value > LONGEST:
        raise ValueError(f"must be at most {LONGEST.days} days")
    return value


def check_database_url(value: str) -> str:
    """A URL the tracker can use: parsed, SQLite or PostgreSQL, with an installed async driver."""
    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError(f"not a database URL: {value!r}; e.g. {DATABASE_EXAMPLES}") from None
    driver = DRIVERS.get(url.get_backend_name())
    if driver is None or url.get_driver_name() != driver:
        raise ValueError(f"{url.drivername} is not supported; use {DATABASE_EXAMPLES}")
    try:
        url.get_dialect().import_dbapi()
    except ImportError:
        extra = " (pip install 'vod-ai-tracker[postgres]')" if driver == "asyncpg" else ""
        raise ValueError(f"the driver {driver} is not installed{extra}") from None
    return value


DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}  # the async drivers the tracker uses
DATABASE_EXAMPLES = "sqlite+aiosqlite:///./tracker.db or postgresql+asyncpg://user@host/db"


def split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# A VOD region id as VOD writes them (cn-shanghai, ap-southeast-1, cn-north-2-gov-1:
# vod-reference.md 1.1). It becomes part of a host name (vod.<region>.aliyuncs.com), so a job's
# region (tracker/submit/validate.py) and TRACKER_VOD_REGION follow this one rule.
REGION_PATTERN = r"^[a-z]{2,}(-[a-z0-9]+){1,3}$"
REGION_LIMIT = 32  # the width of jobs.region
REGION_RULE = "a VOD region id such as cn-shanghai (lower-case letters and digits, dashes)"
ENDPOINT_RULE = (
    "an http or https URL of a host and port, such as http://127.0.0.1:9000 (no user or "
    "password, path, query or fragment)"
)


def is_region_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) <= REGION_LIMIT
        and re.fullmatch(REGION_PATTERN, value) is not None
    )


def check_region(value: str) -> str:
    if not is_region_id(value):
        raise ValueError(f"not {REGION_RULE}")
    return value


def check_endpoint(value: str) -> str:
    """A VOD endpoint: `http(s)://host[:port][/]`. Signed requests go there with the key pair's
    signature and the STS token, so nothing else is taken; the value is never quoted back (it
    may carry a password or a token)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises on a port that is not a number from 0 to 65535)
    except ValueError:
        raise ValueError(f"not {ENDPOINT_RULE}") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "?" in value
        or "#" in value
        or any(c.isspace() for c in value)
    ):
        raise ValueError(f"not {ENDPOINT_RULE}")
    return value


def optional_endpoint(value: object) -> object:
    """An empty value is unset: docker-compose passes `${TRACKER_VOD_ENDPOINT:-}` so."""
    if isinstance(value, str) and not value.strip():
        return None
    return value.strip() if isinstance(value, str) else value


def split_pairs(value: object) -> object:
    """`cn-shanghai=http://127.0.0.1:9000,cn-beijing=http://127.0.0.1:9001` -> a dict, each
    region of VOD's shape, once, each URL an endpoint (`check_endpoint`)."""
    if not isinstance(value, str):
        return value
    pairs: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        name, sep, url = (part.strip() for part in item.partition("="))
        if not sep or not name or not url:
            raise ValueError("expected region=url, comma-separated")
        if not is_region_id(name):
            raise ValueError(f"a region is not {REGION_RULE}")
        if name in pairs:
            raise ValueError(f"{name} is given twice")
        try:
            pairs[name] = check_endpoint(url)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return pairs


# The job types a per-type setting may name (tracker.vod.JOB_TYPES; this module is imported by
# tracker.vod, so it cannot import it back: tests/core/test_config.py holds them equal).
JOB_TYPE_NAMES = ("AIVideoTag", "AIMediaDNA")


AMOUNT_LIMIT = 1e9  # minutes or money per minute: far above any real figure, within a BIGINT


def _split_amounts(value: object) -> object:
    """`AIVideoTag=600,AIMediaDNA=1200` (or a dict) -> {type: amount}: known types only, each
    a finite number from 0 to AMOUNT_LIMIT."""
    if isinstance(value, str):
        pairs: dict[str, object] = {}
        for item in value.split(","):
            if not item.strip():
                continue
            name, sep, text = item.partition("=")
            if not sep or not name.strip() or not text.strip():
                raise ValueError(f"expected type=number, got {item.strip()!r}")
            pairs[name.strip()] = text.strip()
        value = pairs
    if not isinstance(value, dict):
        return value
    amounts: dict[str, float] = {}
    for name, raw in value.items():
        if name not in JOB_TYPE_NAMES:
            raise ValueError(f"unknown type {name!r}; the types are {', '.join(JOB_TYPE_NAMES)}")
        try:
            amount = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{name}={raw}: not a number") from None
        if not math.isfinite(amount) or not 0 <= amount <= AMOUNT_LIMIT:
            raise ValueError(f"{name}={raw}: must be a number from 0 to {AMOUNT_LIMIT:g}")
        amounts[name] = amount
    return amounts


def endpoint_or_none(value: str | None) -> str | None:
    return None if value is None else check_endpoint(value)


Duration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]
# Only where zero means something (reconcile_grace: look at jobs at once).
NonNegativeDuration = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_bounded)
]
Csv = Annotated[list[str], NoDecode, BeforeValidator(split_csv)]
PerType = Annotated[dict[str, float], NoDecode, BeforeValidator(_split_amounts)]
Switch = Literal["on", "off"]
