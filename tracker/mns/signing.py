"""MNS's V2 request signature and where its credentials come from (../shared/mns-reference.md 2).

The credential source is a small Protocol, `async def get() -> AccessKey`, so that a rotating
source (STS, RAM role) plugs in where the static key pair from the settings is used today.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from tracker.config import Settings

API_VERSION = "2015-06-06"


class AccessKey(Protocol):
    """A key pair, with the STS token when it is temporary."""

    @property
    def access_key_id(self) -> str: ...

    @property
    def access_key_secret(self) -> str: ...

    @property
    def security_token(self) -> str | None: ...


class CredentialSource(Protocol):
    """Where the current key comes from; called before every request (it may rotate)."""

    async def get(self) -> AccessKey: ...


@dataclass(frozen=True, slots=True)
class StaticKey:
    access_key_id: str
    access_key_secret: str
    security_token: str | None = None

    def __repr__(self) -> str:  # never the secret or the token
        return f"StaticKey(access_key_id={self.access_key_id!r})"


class StaticCredentials:
    """The one key pair of the settings (ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET/_SECURITY_TOKEN),
    the same VOD is called with."""

    def __init__(self, key: StaticKey) -> None:
        self.key = key

    @classmethod
    def from_settings(cls, settings: Settings) -> StaticCredentials:
        if not settings.access_key_id or settings.access_key_secret is None:
            raise ValueError("MNS needs ALIBABA_CLOUD_ACCESS_KEY_ID and _SECRET")
        token = settings.security_token.get_secret_value() if settings.security_token else None
        return cls(
            StaticKey(settings.access_key_id, settings.access_key_secret.get_secret_value(), token)
        )

    async def get(self) -> StaticKey:
        return self.key


def string_to_sign(
    verb: str,
    content_md5: str,
    content_type: str,
    date: str,
    headers: Mapping[str, str],
    resource: str,
) -> str:
    """VERB, Content-MD5, Content-Type, Date, then every `x-mns-*` header lower-cased and sorted
    as `name:value`, each on its own line, then the path and query exactly as sent (2.1)."""
    mns_headers = sorted(
        (name.lower(), value)
        for name, value in headers.items()
        if name.lower().startswith("x-mns-")
    )
    canonical = "".join(f"{name}:{value}\n" for name, value in mns_headers)
    return f"{verb}\n{content_md5}\n{content_type}\n{date}\n{canonical}{resource}"


def sign(text: str, secret: str) -> str:
    """base64(HMAC-SHA1(secret, text))."""
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def authorization(access_key_id: str, signature: str) -> str:
    return f"MNS {access_key_id}:{signature}"


def content_md5(body: bytes) -> str:
    """The SDK's Content-MD5: base64 of the 32-character hex digest, not of the raw digest."""
    return base64.b64encode(hashlib.md5(body).hexdigest().encode()).decode()


def body_md5(body: str) -> str:
    """MessageBodyMD5: the upper-case hex MD5 of the body text as stored (4)."""
    return hashlib.md5(body.encode()).hexdigest().upper()
