"""Settings read once from the environment and passed to everything that needs them."""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tracker.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SHORT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_duration(value: object) -> object:
    """`90s`, `5m`, `2h`, `30d`; anything else is left to pydantic (seconds, ISO 8601)."""
    if isinstance(value, str) and (match := _SHORT.match(value)):
        return timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    return value


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Csv = Annotated[list[str], NoDecode, BeforeValidator(_split_csv)]
Switch = Literal["on", "off"]


class Settings(BaseSettings):
    """Every knob of the tracker. Environment names are `TRACKER_<FIELD>` unless aliased."""

    model_config = SettingsConfigDict(env_prefix="TRACKER_", extra="ignore", populate_by_name=True)

    database_url: str = "sqlite+aiosqlite:///./tracker.db"
    # WAL + NORMAL survives a killed process; FULL also survives power loss (README, "Durability").
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "FULL"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    vod_region: str = "cn-shanghai"
    vod_endpoint: str | None = None
    vod_rate_limit: float = Field(default=30.0, gt=0)
    vod_timeout: Duration = timedelta(seconds=10)
    vod_connect_timeout: Duration = timedelta(seconds=5)
    vod_retries: int = Field(default=4, ge=0, le=10)
    access_key_id: str | None = Field(
        default=None, validation_alias=AliasChoices("ALIBABA_CLOUD_ACCESS_KEY_ID")
    )
    access_key_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    )
    security_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ALIBABA_CLOUD_SECURITY_TOKEN")
    )

    callback_url: str | None = None
    callback_auth_key: Annotated[list[SecretStr], NoDecode, BeforeValidator(_split_csv)] = []
    callback_auth: Switch = "on"
    callback_max_skew: Duration = timedelta(minutes=5)
    callback_confirm: Switch | None = None

    api_tokens: Annotated[list[SecretStr], NoDecode, BeforeValidator(_split_csv)] = []
    api_auth: Switch = "on"
    metrics_token: SecretStr | None = None

    stale_after: Duration = timedelta(hours=1)
    stale_after_aivideotag: Duration | None = None
    stale_after_aimediadna: Duration | None = None
    sweep_interval: Duration = timedelta(minutes=1)
    reconcile_interval: Duration = timedelta(minutes=5)
    event_retention: Duration = timedelta(days=30)
    # Scheduler (tracker/scheduler/): `tracker serve --no-scheduler` sets it off.
    scheduler: Switch = "on"
    reconcile_grace: Duration = timedelta(minutes=10)
    reconcile_batch: int = Field(default=200, ge=0)
    # Callbacks awaiting VOD's confirmation (callback_confirm) are looked up this often.
    confirm_interval: Duration = timedelta(seconds=5)
    lease_ttl: Duration = timedelta(seconds=30)

    # VOD's events from an MNS queue (tracker/mns/): consumed when both are set.
    mns_endpoint: str | None = Field(default=None, pattern=r"^https?://[^/\s?#]+/?$")
    mns_queue: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,119}$")
    mns_wait: int = Field(default=30, ge=0, le=30)  # long poll seconds (mns-reference.md 4)
    mns_pollers: int = Field(default=2, ge=1, le=16)
    mns_failed_retry: Duration = timedelta(seconds=60)  # queue missing or access denied

    @property
    def vod_url(self) -> str:
        return self.vod_endpoint or f"https://vod.{self.vod_region}.aliyuncs.com"

    @property
    def consumes_mns(self) -> bool:
        return bool(self.mns_endpoint and self.mns_queue)

    @property
    def has_vod_credentials(self) -> bool:
        return bool(self.access_key_id and self.access_key_secret)

    @property
    def confirms_callbacks(self) -> bool:
        if self.callback_confirm is None:
            return self.has_vod_credentials
        return self.callback_confirm == "on"

    @property
    def on_loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def callback_open(self) -> bool:
        """Unsigned callbacks are accepted: auth is off, or on with no key while on loopback."""
        return self.callback_auth == "off" or not self.callback_auth_key

    @property
    def api_open(self) -> bool:
        return self.api_auth == "off" or not self.api_tokens

    def stale_after_for(self, job_type: str) -> timedelta:
        override = {
            "AIVideoTag": self.stale_after_aivideotag,
            "AIMediaDNA": self.stale_after_aimediadna,
        }.get(job_type)
        return override or self.stale_after

    def check_exposure(self) -> None:
        """Refuse to serve callbacks that could never verify, to listen beyond loopback without
        callback keys or API tokens, or to consume an MNS queue half configured."""
        if bool(self.mns_endpoint) != bool(self.mns_queue):
            raise ConfigError(
                "TRACKER_MNS_ENDPOINT and TRACKER_MNS_QUEUE go together: set both to consume "
                "VOD's events from the queue, or neither"
            )
        if self.consumes_mns and not self.has_vod_credentials:
            raise ConfigError(
                "TRACKER_MNS_QUEUE is set but ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET are not: MNS "
                "is called with the same key pair as VOD"
            )
        if not self.callback_open and self.callback_url is None:
            raise ConfigError(
                "TRACKER_CALLBACK_AUTH_KEY is set but TRACKER_CALLBACK_URL is not: VOD signs the "
                "callback URL (vod-reference.md 6.4), so no callback could be verified; set it to "
                "the URL configured in VOD"
            )
        if self.on_loopback:
            return
        if self.callback_auth == "on" and not self.callback_auth_key:
            raise ConfigError(
                f"TRACKER_HOST={self.host} is not loopback and TRACKER_CALLBACK_AUTH_KEY is unset: "
                "set the VOD callback AuthKey, or TRACKER_CALLBACK_AUTH=off to accept unsigned "
                "callbacks"
            )
        if self.api_auth == "on" and not self.api_tokens:
            raise ConfigError(
                f"TRACKER_HOST={self.host} is not loopback and TRACKER_API_TOKENS is unset: "
                "set bearer tokens for the status API, or TRACKER_API_AUTH=off to open it"
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def env_name(field: str) -> str:
    if field.isupper():
        return field
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"TRACKER_{field.upper()}"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; a bad value raises ConfigError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        raise ConfigError(f"{env_name(field)}: {error['msg']}") from None
