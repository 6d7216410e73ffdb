"""VOD signatures: RPC v1 HMAC-SHA1, V3 ACS3-HMAC-SHA256, the callback MD5 (sections 4, 6.4)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

API_VERSION = "2017-03-21"


def percent_encode(value: str) -> str:
    """RFC 3986 encoding of UTF-8: only A-Z a-z 0-9 - _ . ~ stay; space is %20, * is %2A."""
    return quote(value, safe="-_.~", encoding="utf-8")


def canonical_query(params: Mapping[str, str]) -> str:
    """Sorted `name=value` pairs of every parameter except `Signature`."""
    return "&".join(
        f"{percent_encode(k)}={percent_encode(v)}"
        for k, v in sorted(params.items())
        if k != "Signature"
    )


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    return f"{method.upper()}&%2F&{percent_encode(canonical_query(params))}"


def sign_v1(method: str, params: Mapping[str, str], secret: str) -> str:
    """HMAC-SHA1 signature version 1.0 over exactly `params` (minus `Signature`)."""
    digest = hmac.new(
        f"{secret}&".encode(), string_to_sign(method, params).encode(), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode()


def v3_string_to_sign(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_sha256: str,
) -> str:
    """ACS3-HMAC-SHA256 (section 4.2): `headers` are the signed ones, lower-case names."""
    canonical_query = "&".join(
        f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in sorted(query.items())
    )
    names = sorted(headers)
    canonical_headers = "".join(f"{n}:{headers[n].strip()}\n" for n in names)
    canonical = "\n".join(
        [method.upper(), path or "/", canonical_query, canonical_headers, ";".join(names)]
    )
    canonical += "\n" + payload_sha256
    return "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()


def sign_v3(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_sha256: str,
    secret: str,
) -> str:
    """Hex HMAC-SHA256 keyed with the secret alone (no trailing `&`, unlike v1)."""
    to_sign = v3_string_to_sign(method, path, query, headers, payload_sha256)
    return hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def sign_callback(url: str, timestamp: int, key: str) -> str:
    """X-VOD-SIGNATURE: md5 hex of `url|timestamp|key`; the body is not signed (section 6.4)."""
    return hashlib.md5(f"{url}|{timestamp}|{key}".encode()).hexdigest()


def format_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_VOD_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.:](\d{1,6}))?(Z|[+-]\d{2}:?\d{2})?$"
)


def parse_vod_time(value: object) -> datetime | None:
    """Aware UTC from VOD's times, leniently: `...:ssZ`, `.SSSZ`, and the `:SSSZ` of section 6.2."""
    if not isinstance(value, str) or not (match := _VOD_TIME.match(value.strip())):
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0").ljust(6, "0")[:6])
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, UTC
        )
    except ValueError:
        return None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        moment -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return moment
