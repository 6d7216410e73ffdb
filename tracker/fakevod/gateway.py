"""Simulator, gateway: who may call, and how often (vod-reference sections 1.3, 1.5, 4)."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tracker.vod import (
    API_VERSION,
    parse_vod_time,
    sign_v1,
    sign_v3,
    string_to_sign,
    v3_string_to_sign,
)

WINDOW = 900.0  # seconds: timestamp skew allowed and how long a nonce stays used (section 1.3)
V3 = "ACS3-HMAC-SHA256"
# Status codes for the [U] cases of section 1.5: both SDKs only need a 4xx, and aliyun's gateway
# has been seen answering 400 for both; the tracker's client retries Throttling* on any status.
SIGNATURE_STATUS = 400
THROTTLE_STATUS = 400
# STS refusals: the codes VOD's own SDKs test for (InvalidSecurityToken.*); the status is [U].
TOKEN_STATUS = 403
STS_KEPT = 3600.0  # seconds an expired STS key is still recognised (and refused as expired)


@dataclass(frozen=True)
class StsKey:
    """Short-lived credentials the simulator handed out at GET /credentials."""

    access_key_id: str
    access_key_secret: str
    security_token: str
    expires_at: int  # Unix seconds; the key is accepted while the clock is before it

    def as_json(self) -> dict[str, Any]:
        """The credentials-URI answer alibabacloud-credentials reads (URLCredentialsProvider)."""
        stamp = datetime.fromtimestamp(self.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "Code": "Success",
            "AccessKeyId": self.access_key_id,
            "AccessKeySecret": self.access_key_secret,
            "SecurityToken": self.security_token,
            "Expiration": stamp,
            "LastUpdated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


class Refused(Exception):
    """An error answer in VOD's shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Gateway:
    """Verifies v1 and V3 signatures over what arrived, the time window, nonces, and the QPS."""

    def __init__(
        self, access_key_id: str, access_key_secret: str, *, sts_ttl: float | None = None
    ) -> None:
        self.access_key_id = access_key_id
        self._secret = access_key_secret
        self.sts_ttl = sts_ttl
        self._sts: dict[str, StsKey] = {}
        self.sts_issued = 0
        self.sts_accepted = 0
        self._nonces: dict[str, float] = {}
        self._nonce_order: deque[tuple[float, str]] = deque()
        self._qps: float | None = None
        self._tokens = 1.0
        self._refilled = time.monotonic()

    async def authenticate(self, request: web.Request) -> tuple[str, dict[str, str]]:
        params = dict(request.query)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            # VOD's answer to an oversized request is not documented [U]; it is a refusal in
            # VOD's shape (section 1.4), never a 500, which says the job may have been created.
            raise Refused(
                400, "InvalidParameter", "The request is too large: a parameter is too long."
            ) from None
        if request.content_type == "application/x-www-form-urlencoded" and body:
            try:
                params.update(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True))
            except (UnicodeDecodeError, ValueError):
                raise Refused(400, "InvalidParameter", "The form body is malformed.") from None
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith(V3 + " "):
            return self._check_v3(request, params, body, authorization), params
        return self._check_v1(request.method, params), params

    def _check_v1(self, method: str, params: dict[str, str]) -> str:
        for name in (
            "Action",
            "Version",
            "AccessKeyId",
            "Signature",
            "SignatureNonce",
            "Timestamp",
            "SignatureMethod",
        ):
            required(params, name)
        if params["Version"] != API_VERSION:
            raise Refused(400, "InvalidVersion", "Specified parameter Version is not valid.")
        if params["SignatureMethod"] != "HMAC-SHA1":
            raise Refused(400, "InvalidParameter", "SignatureMethod must be HMAC-SHA1")
        self._check_time(params["Timestamp"])
        secret = self._check_key(params["AccessKeyId"], params.get("SecurityToken"))
        signed = {k: v for k, v in params.items() if k != "Signature"}
        expected = sign_v1(method, signed, secret)
        if not hmac.compare_digest(expected, params["Signature"]):
            raise Refused(
                SIGNATURE_STATUS,
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. server string to "
                f"sign is:{string_to_sign(method, signed)}",
            )
        self._use_nonce(params["SignatureNonce"])
        return params["Action"]

    def _check_v3(
        self, request: web.Request, params: dict[str, str], body: bytes, authorization: str
    ) -> str:
        fields = dict(
            part.strip().split("=", 1)
            for part in authorization[len(V3) :].split(",")
            if "=" in part
        )
        headers = request.headers
        action = headers.get("x-acs-action", "")
        for name in ("x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce"):
            if not headers.get(name):
                raise Refused(400, "MissingParameter", f"The header {name} is missing.")
        if headers["x-acs-version"] != API_VERSION:
            raise Refused(400, "InvalidVersion", "Specified parameter Version is not valid.")
        self._check_time(headers["x-acs-date"])
        secret = self._check_key(fields.get("Credential", ""), headers.get("x-acs-security-token"))
        signed_names = [n for n in fields.get("SignedHeaders", "").split(";") if n]
        if not {"x-acs-date", "x-acs-signature-nonce"} <= set(signed_names):
            raise Refused(400, "InvalidParameter", "x-acs-date and the nonce must be signed")
        payload = hashlib.sha256(body).hexdigest()
        if headers.get("x-acs-content-sha256", payload) != payload:
            raise Refused(400, "ContentSHA256NotMatch", "x-acs-content-sha256 is not the body's")
        signed_headers = {
            n: ",".join(sorted(v.strip() for v in headers.getall(n, []))) for n in signed_names
        }
        args = (request.method, request.path, dict(request.query), signed_headers, payload)
        expected = sign_v3(*args, secret)
        if not hmac.compare_digest(expected, fields.get("Signature", "")):
            raise Refused(
                SIGNATURE_STATUS,
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. server string to "
                f"sign is:{v3_string_to_sign(*args)}",
            )
        self._use_nonce(headers["x-acs-signature-nonce"])
        return action

    def _check_time(self, stamp: str) -> None:
        moment = parse_vod_time(stamp)
        if moment is None:
            raise Refused(
                400, "InvalidTimeStamp.Format", f"Specified time stamp is not valid: {stamp}"
            )
        if abs((datetime.now(UTC) - moment).total_seconds()) > WINDOW:
            raise Refused(
                400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired."
            )

    def issue_sts(self) -> StsKey:
        """New STS credentials living `sts_ttl` seconds (whole seconds, as Expiration says)."""
        if self.sts_ttl is None:
            raise ValueError("the simulator hands out no STS credentials (no sts_ttl)")
        now = time.time()
        for key_id in [k for k, v in self._sts.items() if v.expires_at < now - STS_KEPT]:
            del self._sts[key_id]
        key = StsKey(
            access_key_id=f"STS.{secrets.token_hex(12)}",
            access_key_secret=secrets.token_urlsafe(24),
            security_token=secrets.token_urlsafe(48),
            expires_at=math.floor(now + self.sts_ttl),
        )
        self._sts[key.access_key_id] = key
        self.sts_issued += 1
        return key

    def _check_key(self, access_key_id: str, security_token: str | None) -> str:
        """The secret to verify with: the simulator's own key pair, or STS credentials it
        issued, with their token and only until they expire."""
        if access_key_id == self.access_key_id:
            return self._secret
        sts = self._sts.get(access_key_id)
        if sts is None:
            raise Refused(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        if not security_token:
            raise Refused(TOKEN_STATUS, "MissingSecurityToken", "SecurityToken is mandatory.")
        if not hmac.compare_digest(security_token, sts.security_token):
            raise Refused(
                TOKEN_STATUS,
                "InvalidSecurityToken.MismatchWithAccessKey",
                "Specified SecurityToken mismatch with the AccessKey.",
            )
        if time.time() >= sts.expires_at:
            raise Refused(
                TOKEN_STATUS, "InvalidSecurityToken.Expired", "Specified SecurityToken is expired."
            )
        self.sts_accepted += 1
        return sts.access_key_secret

    def _use_nonce(self, nonce: str) -> None:
        now = time.monotonic()
        while self._nonce_order and self._nonce_order[0][0] < now - WINDOW:
            self._nonces.pop(self._nonce_order.popleft()[1], None)
        if nonce in self._nonces:
            raise Refused(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
        self._nonces[nonce] = now
        self._nonce_order.append((now, nonce))

    def throttle(self, qps: float | None) -> None:
        """A token bucket of `qps` tokens refilled at `qps` per second, full again whenever the
        rate changes (a test that lowers it starts from a known bucket)."""
        qps = qps if qps and qps > 0 else None
        if qps != self._qps:
            self._qps, self._tokens, self._refilled = qps, max(1.0, qps or 1.0), time.monotonic()
        if self._qps is None:
            return
        now = time.monotonic()
        capacity = max(1.0, self._qps)
        self._tokens = min(capacity, self._tokens + (now - self._refilled) * self._qps)
        self._refilled = now
        if self._tokens < 1:
            raise Refused(
                THROTTLE_STATUS, "Throttling.User", "Request was denied due to user flow control."
            )
        self._tokens -= 1


def required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise Refused(
            400,
            "MissingParameter",
            f'The input parameter "{name}" that is mandatory for processing this request is not '
            "supplied.",
        )
    return value
