"""Settings read once from the environment and passed to everything that needs them; what each
value may hold is in values.py."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tracker.config.values import (
    AMOUNT_LIMIT,
    DATABASE_EXAMPLES,
    DRIVERS,
    ENDPOINT_RULE,
    JOB_TYPE_NAMES,
    LONGEST,
    REGION_LIMIT,
    REGION_PATTERN,
    REGION_RULE,
    Csv,
    Duration,
    NonNegativeDuration,
    PerType,
    Switch,
    check_database_url,
    check_endpoint,
    check_region,
    endpoint_or_none,
    is_region_id,
    optional_endpoint,
    parse_duration,
    split_csv,
    split_pairs,
)
from tracker.errors import ConfigError

__all__ = [
    "AMOUNT_LIMIT",
    "Csv",
    "DATABASE_EXAMPLES",
    "DRIVERS",
    "Duration",
    "ENDPOINT_RULE",
    "JOB_TYPE_NAMES",
    "LONGEST",
    "NonNegativeDuration",
    "PerType",
    "REGION_LIMIT",
    "REGION_PATTERN",
    "REGION_RULE",
    "Switch",
    "check_database_url",
    "check_endpoint",
    "check_region",
    "is_region_id",
    "parse_duration",
    "Settings",
    "env_name",
    "is_loopback",
    "load_settings",
]


class Settings(BaseSettings):
    """Every knob of the tracker. Environment names are `TRACKER_<FIELD>` unless aliased."""

    model_config = SettingsConfigDict(env_prefix="TRACKER_", extra="ignore", populate_by_name=True)

    database_url: Annotated[str, AfterValidator(check_database_url)] = (
        "sqlite+aiosqlite:///./tracker.db"
    )
    # WAL + NORMAL survives a killed process; FULL also survives power loss (README, "Durability").
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "FULL"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    vod_region: Annotated[str, AfterValidator(check_region)] = "cn-shanghai"
    vod_endpoint: Annotated[
        str | None, BeforeValidator(optional_endpoint), AfterValidator(endpoint_or_none)
    ] = None
    # Per-region endpoints (`region=url,...`), e.g. one simulator per region; a region not
    # listed goes to TRACKER_VOD_ENDPOINT if set, else to vod.<region>.aliyuncs.com.
    vod_endpoints: Annotated[dict[str, str], NoDecode, BeforeValidator(split_pairs)] = {}
    vod_rate_limit: float = Field(default=30.0, gt=0, allow_inf_nan=False)
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
    # The other credential sources (tracker/vod/credentials.py), by alibabacloud-credentials'
    # variable names; the first one configured is used, none is probed.
    role_arn: str | None = Field(
        default=None, validation_alias=AliasChoices("ALIBABA_CLOUD_ROLE_ARN")
    )
    oidc_provider_arn: str | None = Field(
        default=None, validation_alias=AliasChoices("ALIBABA_CLOUD_OIDC_PROVIDER_ARN")
    )
    oidc_token_file: str | None = Field(
        default=None, validation_alias=AliasChoices("ALIBABA_CLOUD_OIDC_TOKEN_FILE")
    )
    role_session_name: str | None = Field(
        default=None, validation_alias=AliasChoices("ALIBABA_CLOUD_ROLE_SESSION_NAME")
    )
    # Where OIDC/RRSA assumes the role; unset: the library's (ALIBABA_CLOUD_STS_REGION, else
    # sts.aliyuncs.com). An `http://` URL is used as it is (the simulator in tests).
    sts_endpoint: str | None = None
    credentials_file: str | None = Field(
        default=None, validation_alias=AliasChoices("ALIBABA_CLOUD_CREDENTIALS_FILE")
    )
    profile: str | None = Field(
        default=None, validation_alias=AliasChoices("ALIBABA_CLOUD_PROFILE")
    )
    ecs_metadata: str | None = Field(
        default=None, validation_alias=AliasChoices("ALIBABA_CLOUD_ECS_METADATA")
    )
    credentials_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("ALIBABA_CLOUD_CREDENTIALS_URI")
    )

    callback_url: str | None = None
    callback_auth_key: Annotated[list[SecretStr], NoDecode, BeforeValidator(split_csv)] = []
    callback_auth: Switch = "on"
    callback_max_skew: Duration = timedelta(minutes=5)
    callback_confirm: Switch | None = None

    api_tokens: Annotated[list[SecretStr], NoDecode, BeforeValidator(split_csv)] = []
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
    reconcile_grace: NonNegativeDuration = timedelta(minutes=10)
    reconcile_batch: int = Field(default=200, ge=0)
    # Callbacks awaiting VOD's confirmation (callback_confirm) are looked up this often.
    confirm_interval: Duration = timedelta(seconds=5)
    lease_ttl: Duration = timedelta(seconds=30)
    # Jobs without a JobId (lost SubmitAIJob answer, crashed submitter) are looked up by media
    # after `recover_after` and given up as `submit_failed` after `recover_give_up`
    # (tracker/scheduler/recover.py).
    recover_after: Duration = timedelta(minutes=2)
    recover_give_up: Duration = timedelta(minutes=30)
    recover_interval: Duration = timedelta(minutes=1)

    # Notifications (tracker/notify/): the relay runs in `tracker serve` unless off.
    notify: Switch = "on"
    # One subscription to every event, declared by the environment (the simplest deployment).
    notify_url: str | None = None
    notify_secret: SecretStr | None = None
    notify_timeout: Duration = timedelta(seconds=15)
    notify_retry_schedule: Annotated[
        list[NonNegativeDuration], NoDecode, BeforeValidator(split_csv), Field(min_length=1)
    ] = [timedelta(seconds=s) for s in (0, 5, 300, 1800, 7200, 18000, 36000, 36000)]
    notify_disable_after: Duration = timedelta(days=5)
    notify_allow_private: Switch = "off"
    notify_concurrency: int = Field(default=8, ge=1, le=256)  # per subscription, per process
    # Requests made by a child process of the relay's (tracker/notify/courier.py): faster with
    # a core to spare for it, at the callbacks' expense without.
    notify_courier: Switch = "off"
    # Subscriptions at most (POST /subscriptions answers 409 beyond): each one costs the relay
    # a share of its writes, so their number is bounded like any other load.
    notify_max_subscriptions: int = Field(default=100, ge=1, le=100_000)
    # Requests held open for changes (`GET /jobs/{id}?wait=` and `GET /changes/stream`), per
    # process: per caller (API token, or address when the API is open) and in all; beyond, 429.
    wait_per_caller: int = Field(default=50, ge=1, le=100_000)
    wait_max: int = Field(default=500, ge=1, le=100_000)

    # VOD's events from an MNS queue (tracker/mns/): consumed when both are set.
    mns_endpoint: str | None = Field(default=None, pattern=r"^https?://[^/\s?#]+/?$")
    mns_queue: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,119}$")
    mns_wait: int = Field(default=30, ge=0, le=30)  # long poll seconds (mns-reference.md 4)
    mns_pollers: int = Field(default=2, ge=1, le=16)
    mns_failed_retry: Duration = timedelta(seconds=60)  # queue missing or access denied

    # `json`: one JSON object per log line, for log pipelines (tracker/logs.py).
    log_format: Literal["text", "json"] = "text"

    # The console (tracker/console/): how long a sign-in lasts, and the key that signs its
    # cookie (unset: derived from TRACKER_API_TOKENS, so replicas agree and a withdrawn token
    # ends every session signed with the old set).
    ui_session_ttl: Duration = timedelta(hours=12)
    ui_secret: SecretStr | None = None

    # Spend (tracker/submit/budget.py): minutes of video per job type and UTC day, `AIVideoTag=600`;
    # a type not named has no limit. The price per minute only turns minutes into an estimate.
    daily_minutes: PerType = {}
    price_per_minute: PerType = {}
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")  # ISO 4217, e.g. USD

    @property
    def vod_url(self) -> str:
        return self.vod_url_for(self.vod_region)

    def vod_url_for(self, region: str) -> str:
        """TRACKER_VOD_ENDPOINTS' entry, else TRACKER_VOD_ENDPOINT (so that a simulator set up
        for one region never lets another region's call out), else the region's own."""
        return (
            self.vod_endpoints.get(region)
            or self.vod_endpoint
            or f"https://vod.{region}.aliyuncs.com"
        )

    @property
    def consumes_mns(self) -> bool:
        return bool(self.mns_endpoint and self.mns_queue)

    @property
    def has_vod_credentials(self) -> bool:
        """Some credential source is configured (tracker/vod/credentials.py picks one)."""
        return bool(
            (self.access_key_id and self.access_key_secret)
            or (self.role_arn and self.oidc_provider_arn and self.oidc_token_file)
            or self.credentials_file
            or self.profile
            or self.ecs_metadata
            or self.credentials_uri
        )

    @property
    def confirms_callbacks(self) -> bool:
        if self.callback_confirm is None:
            return self.has_vod_credentials
        return self.callback_confirm == "on"

    @property
    def notifies_private(self) -> bool:
        """Webhooks may go to private, loopback and link-local addresses (notify/egress.py)."""
        return self.notify_allow_private == "on"

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
                "TRACKER_MNS_QUEUE is set but no VOD credentials are (ALIBABA_CLOUD_ACCESS_KEY_ID/"
                "_SECRET or another source in README's Credentials): MNS is called with VOD's"
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
        # Our own validators' words, without pydantic's "Value error, " in front.
        message = error.get("ctx", {}).get("error") if error["type"] == "value_error" else None
        raise ConfigError(f"{env_name(field)}: {message or error['msg']}") from None
