"""Alibaba Cloud credentials for signing VOD (and MNS) requests, through alibabacloud-credentials.

One source is chosen at startup from the settings, never by probing: the library's default chain
would ask the ECS metadata service (and read profile files) on its own, so it is not used. Each
source is one of the library's async providers; `Credentials.get()` returns the current key pair
and refreshes short-lived STS credentials before they expire, one refresh at a time.

Vendor quirks handled here (alibabacloud-credentials 1.0.x, read from its source):
- its providers cache until `Expiration - 15 min`; credentials living less than that are fetched
  again on every call, so this module keeps its own cache and asks only when a refresh is due;
- its refresh lock is a `threading.Lock` taken with a 5 s blocking wait, which would stall the
  event loop if two coroutines refreshed at once: `Credentials` lets one coroutine in at a time;
- credentials VOD refuses before their time (revoked) stay in its cache: the provider is
  built anew to fetch others;
- it reads the environment once, at import, and its `credentials` logger prints to stderr with
  a handler of its own; every value is passed explicitly and that logger is silenced below;
- its exceptions quote the source's whole answer (the AccessKeySecret and SecurityToken of a
  200 it refuses, or of a 500) and the credentials URI with its query: a failure is told here
  as the source and its kind (`_kind`), never with the library's text (tracker/errors.py).
"""

from __future__ import annotations

import asyncio
import configparser
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from alibabacloud_credentials.provider import (
    EcsRamRoleCredentialsProvider,
    OIDCRoleArnCredentialsProvider,
    ProfileCredentialsProvider,
    StaticAKCredentialsProvider,
    StaticSTSCredentialsProvider,
    URLCredentialsProvider,
)
from alibabacloud_credentials_api import ICredentialsProvider

from tracker.config import Settings
from tracker.errors import Unavailable, redact_url

log = logging.getLogger(__name__)

# Its own stderr handler, added at import, goes; and nothing it says reaches ours: it warns on
# every fetch of credentials shorter than 15 minutes, and logs a failed fetch's exception, whose
# text quotes the answer (secrets included) and the URI. Our own line says what failed.
_vendor_log = logging.getLogger("credentials")
_vendor_log.handlers[:] = [logging.NullHandler()]
_vendor_log.propagate = False
_vendor_log.setLevel(logging.CRITICAL + 1)

# Refresh when this share of the credentials' life is left, and at most this long before expiry
# (the library's own 15 minutes): 10 s STS credentials are renewed with about 3 s to spare.
REFRESH_SHARE = 1 / 3
REFRESH_MAX_AHEAD = 15 * 60.0
FETCH_TIMEOUT = 30.0  # the library's own timeouts are 5 s to connect and 10 s to read
RETRY_AFTER = 1.0  # after a failed refresh while the old credentials are still valid

# Named once, for the startup line and the errors: every variable that configures a source.
SOURCES_HINT = (
    "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET (with "
    "ALIBABA_CLOUD_SECURITY_TOKEN for STS), ALIBABA_CLOUD_ROLE_ARN with "
    "ALIBABA_CLOUD_OIDC_PROVIDER_ARN and ALIBABA_CLOUD_OIDC_TOKEN_FILE (RRSA), "
    "ALIBABA_CLOUD_CREDENTIALS_FILE or ALIBABA_CLOUD_PROFILE (profile file), "
    "ALIBABA_CLOUD_ECS_METADATA (ECS RAM role name), or ALIBABA_CLOUD_CREDENTIALS_URI"
)
DEFAULT_PROFILE_FILE = Path("~/.alibabacloud/credentials.ini")


@dataclass(frozen=True)
class AccessKey:
    """One key pair to sign with; `security_token` is set for STS credentials."""

    access_key_id: str
    access_key_secret: str
    security_token: str | None = None

    def __repr__(self) -> str:
        token = ", security_token=***" if self.security_token else ""
        return f"AccessKey(access_key_id={self.access_key_id!r}, access_key_secret=***{token})"


class CredentialsUnavailable(Unavailable):
    """The configured source gave no usable credentials: nothing was sent."""

    code = "credentials_unavailable"


@dataclass(frozen=True)
class _Cached:
    key: AccessKey
    refresh_at: float | None  # wall time (seconds) to ask again; None: never (static keys)
    expires_at: float | None


Provide = Callable[[], ICredentialsProvider]


class Credentials:
    """The current credentials of one source; share one per process (VOD clients, MNS).

    `provide` builds the library's provider; it is called again when VOD refuses credentials
    before their time, since the library would hand back its cached ones until 15 minutes before
    their expiry."""

    def __init__(
        self,
        provide: Provide,
        source: str,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.provide = provide
        self.provider = provide()
        self.source = source  # for logs: which variable configured it, never a secret
        self._wall = wall
        self._cached: _Cached | None = None
        self._lock = asyncio.Lock()
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"Credentials({self.source})"

    async def get(self) -> AccessKey:
        """The key pair to sign the next request with; fetched again when a refresh is due.

        A failed refresh keeps the current credentials while they are valid (and tries again
        after RETRY_AFTER); without any valid ones it raises CredentialsUnavailable.
        """
        cached = self._cached
        if cached is not None and not self._due(cached):
            return cached.key
        async with self._lock:  # one refresh at a time; the others then read its result
            cached = self._cached
            if cached is not None and not self._due(cached):
                return cached.key
            try:
                self._cached = await self._fetch()
            except CredentialsUnavailable:
                if cached is None or self._expired(cached):
                    raise
                self._cached = _Cached(cached.key, self._wall() + RETRY_AFTER, cached.expires_at)
                log.warning("credentials from %s: refresh failed; using the current ones", self)
            return self._cached.key

    def invalidate(self, key: AccessKey) -> bool:
        """VOD refused `key` (expired or revoked early): fetch new credentials on the next get().

        Returns whether anything will change, i.e. the source can hand out new credentials."""
        cached = self._cached
        if cached is None or cached.key != key or cached.refresh_at is None:
            return False
        self.provider = self.provide()
        self._cached = _Cached(cached.key, self._wall(), cached.expires_at)
        return True

    def _due(self, cached: _Cached) -> bool:
        return cached.refresh_at is not None and self._wall() >= cached.refresh_at

    def _expired(self, cached: _Cached) -> bool:
        return cached.expires_at is not None and self._wall() >= cached.expires_at

    async def _fetch(self) -> _Cached:
        asked = self._wall()
        try:
            fetched = await asyncio.wait_for(
                self.provider.get_credentials_async(), timeout=FETCH_TIMEOUT
            )
        except (Exception, TimeoutError) as exc:  # the library raises bare Exceptions too
            raise CredentialsUnavailable(
                f"no credentials from {self.source}: {_kind(exc)}"
            ) from None
        key_id = fetched.get_access_key_id()
        secret = fetched.get_access_key_secret()
        if not key_id or not secret:
            raise CredentialsUnavailable(f"no credentials from {self.source}: empty key pair")
        key = AccessKey(key_id, secret, fetched.get_security_token() or None)
        self.refreshes += 1
        expiration = getattr(fetched, "get_expiration", lambda: None)()
        if isinstance(expiration, int | float) and expiration > 0:
            lifetime = max(0.0, expiration - asked)
            ahead = min(REFRESH_MAX_AHEAD, lifetime * REFRESH_SHARE)
            return _Cached(key, float(expiration) - ahead, float(expiration))
        if isinstance(self.provider, StaticAKCredentialsProvider | StaticSTSCredentialsProvider):
            return _Cached(key, None, None)
        # No expiry given (a profile wraps its source and drops it): ask the provider every
        # time; the library caches its own STS credentials until 15 minutes before expiry.
        return _Cached(key, asked, None)


# What the library's exceptions say, as the kind of failure (read from its source, 1.0.x): the
# text itself is never passed on, only the HTTP status it names.
_STATUS = re.compile(r"(?:http_code[=:]\s*|HttpCode=)(\d{3})")
_KINDS = (
    ("error retrieving credentials", "an answer without the expected credentials fields"),
    ("failed to get credential from credentials file", "no such profile in the file"),
    ("unsupported credential type", "a profile of a type it does not support"),
    ("Failed to get token from ECS", "no metadata token from the ECS metadata service"),
    ("Failed to get RAM session credentials", "no credentials from the ECS metadata service"),
)


def _kind(exc: BaseException) -> str:
    """A failed fetch as its kind and type (`answered HTTP 500 (CredentialException)`), never
    the exception's text: it may quote the answer and the URI (see the module docstring)."""
    name = type(exc).__name__
    text = str(exc)
    if isinstance(exc, TimeoutError):
        return f"no answer within {FETCH_TIMEOUT:g}s"
    if isinstance(exc, configparser.Error):
        return f"a profile file that is not a valid ini file ({name})"
    if isinstance(exc, FileNotFoundError):
        return "the file does not exist"
    if isinstance(exc, json.JSONDecodeError):
        return "an answer that is not JSON"
    # Tea (the library's HTTP) wraps aiohttp's connection errors in its RetryError.
    inner = exc.__cause__ or exc.__context__
    if isinstance(exc, aiohttp.ClientError | OSError) or isinstance(
        inner, aiohttp.ClientError | OSError | TimeoutError
    ):
        return f"unreachable ({name})"
    if isinstance(exc, TypeError | KeyError | ValueError) and "strptime" in text + repr(exc.args):
        return f"an answer without a valid Expiration ({name})"
    if status := _STATUS.search(text):
        return f"answered HTTP {status[1]} ({name})"
    for words, kind in _KINDS:
        if words in text:
            return f"{kind} ({name})"
    return f"failed ({name})"


def static_credentials(key: AccessKey, source: str = "a static key pair") -> Credentials:
    """Fixed credentials (tests, the simulator's own key pair)."""

    def provide() -> ICredentialsProvider:
        if key.security_token:
            return StaticSTSCredentialsProvider(
                access_key_id=key.access_key_id,
                access_key_secret=key.access_key_secret,
                security_token=key.security_token,
            )
        return StaticAKCredentialsProvider(
            access_key_id=key.access_key_id, access_key_secret=key.access_key_secret
        )

    return Credentials(provide, source)


def credentials_from_settings(settings: Settings) -> Credentials | None:
    """The first configured source, in the library's order (keys in the environment, OIDC/RRSA,
    profile file, ECS RAM role, credentials URI); None when nothing is configured. Builds no
    connection: the first get() is the first request."""
    if settings.access_key_id and settings.access_key_secret:
        token = settings.security_token.get_secret_value() if settings.security_token else None
        key = AccessKey(
            settings.access_key_id, settings.access_key_secret.get_secret_value(), token
        )
        return static_credentials(key, "ALIBABA_CLOUD_ACCESS_KEY_ID")
    if settings.role_arn and settings.oidc_provider_arn and settings.oidc_token_file:
        role_arn, provider_arn = settings.role_arn, settings.oidc_provider_arn
        token_file, session = settings.oidc_token_file, settings.role_session_name
        sts_endpoint = settings.sts_endpoint
        return Credentials(
            lambda: OIDCRoleArnCredentialsProvider(
                role_arn=role_arn,
                oidc_provider_arn=provider_arn,
                oidc_token_file_path=token_file,
                role_session_name=session,
                sts_endpoint=sts_endpoint,
            ),
            f"OIDC/RRSA as {role_arn}",
        )
    if settings.credentials_file or settings.profile:
        path = Path(settings.credentials_file or DEFAULT_PROFILE_FILE).expanduser()
        name = settings.profile or "default"
        return Credentials(
            lambda: ProfileCredentialsProvider(profile_file=str(path), profile_name=name),
            f"profile {name!r} of {path}",
        )
    if settings.ecs_metadata:
        # Asked only because the role is named; the library's own refresher thread stays off.
        role = settings.ecs_metadata
        return Credentials(
            lambda: EcsRamRoleCredentialsProvider(role_name=role, async_update_enabled=False),
            f"ECS RAM role {role}",
        )
    if settings.credentials_uri:
        uri = settings.credentials_uri
        return Credentials(
            # Its query may hold a token: the source is named by host alone (tracker/errors.py).
            lambda: URLCredentialsProvider(uri=uri),
            f"ALIBABA_CLOUD_CREDENTIALS_URI at {redact_url(uri)}",
        )
    return None
