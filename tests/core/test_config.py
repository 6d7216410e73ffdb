"""Settings come from the environment; bad values and unsafe exposure are clear startup errors."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tracker.config import JOB_TYPE_NAMES, Settings, load_settings
from tracker.errors import ConfigError
from tracker.vod import JOB_TYPES


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("30d", timedelta(days=30)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("P2D", timedelta(days=2)),
    ],
)
def test_durations_accept_short_and_iso_forms(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: timedelta
) -> None:
    monkeypatch.setenv("TRACKER_STALE_AFTER", raw)
    assert load_settings().stale_after == expected


def test_bad_duration_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKER_STALE_AFTER", "soon")
    with pytest.raises(ConfigError, match=r"^TRACKER_STALE_AFTER: "):
        load_settings()


def test_credentials_use_alibaba_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "ak")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "TopSecret9")
    settings = load_settings()
    assert settings.access_key_id == "ak"
    assert settings.has_vod_credentials
    assert "TopSecret9" not in repr(settings)


def test_key_lists_split_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKER_CALLBACK_AUTH_KEY", "Old1Key, New2Key")
    monkeypatch.setenv("TRACKER_API_TOKENS", "t1")
    settings = load_settings()
    assert [k.get_secret_value() for k in settings.callback_auth_key] == ["Old1Key", "New2Key"]
    assert [t.get_secret_value() for t in settings.api_tokens] == ["t1"]


def test_endpoint_follows_region_unless_overridden() -> None:
    assert Settings(vod_region="cn-beijing").vod_url == "https://vod.cn-beijing.aliyuncs.com"
    assert Settings(vod_endpoint="http://127.0.0.1:9000").vod_url == "http://127.0.0.1:9000"


def test_per_type_stale_threshold_overrides_the_default() -> None:
    settings = Settings(stale_after="1h", stale_after_aimediadna="3h")  # type: ignore[arg-type]
    assert settings.stale_after_for("AIMediaDNA") == timedelta(hours=3)
    assert settings.stale_after_for("AIVideoTag") == timedelta(hours=1)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_without_keys_is_allowed(host: str) -> None:
    Settings(host=host).check_exposure()


def test_public_host_needs_a_callback_key() -> None:
    with pytest.raises(ConfigError, match="TRACKER_CALLBACK_AUTH_KEY"):
        Settings(host="0.0.0.0", api_tokens="t").check_exposure()  # type: ignore[arg-type]


def test_a_callback_key_needs_the_callback_url() -> None:
    with pytest.raises(
        ConfigError, match="^TRACKER_CALLBACK_AUTH_KEY is set but TRACKER_CALLBACK_URL"
    ):
        Settings(callback_auth_key="Key1abc").check_exposure()  # type: ignore[arg-type]
    Settings(callback_auth_key="Key1abc", callback_url="https://t.example/cb").check_exposure()  # type: ignore[arg-type]
    Settings(callback_auth_key="Key1abc", callback_auth="off").check_exposure()  # type: ignore[arg-type]


def test_public_host_needs_api_tokens() -> None:
    with pytest.raises(ConfigError, match="TRACKER_API_TOKENS"):
        Settings(
            host="0.0.0.0", callback_auth_key="Key1abc", callback_url="https://t.example/cb"
        ).check_exposure()  # type: ignore[arg-type]


def test_public_host_may_open_both_explicitly() -> None:
    Settings(host="0.0.0.0", callback_auth="off", api_auth="off").check_exposure()


def test_budgets_and_prices_are_per_type_amounts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKER_DAILY_MINUTES", "AIVideoTag=600, AIMediaDNA=1200.5,")
    monkeypatch.setenv("TRACKER_PRICE_PER_MINUTE", "AIVideoTag=0.05")
    monkeypatch.setenv("TRACKER_CURRENCY", "USD")
    settings = load_settings()
    assert settings.daily_minutes == {"AIVideoTag": 600.0, "AIMediaDNA": 1200.5}
    assert settings.price_per_minute == {"AIVideoTag": 0.05}
    assert settings.currency == "USD"
    monkeypatch.delenv("TRACKER_DAILY_MINUTES")
    assert load_settings().daily_minutes == {}  # unset: no limit


@pytest.mark.parametrize(
    ("name", "raw", "says"),
    [
        ("TRACKER_DAILY_MINUTES", "AIVideoTag", "expected type=number"),
        ("TRACKER_DAILY_MINUTES", "AIVideoTags=5", "unknown type 'AIVideoTags'"),
        ("TRACKER_DAILY_MINUTES", "AIVideoTag=lots", "not a number"),
        ("TRACKER_DAILY_MINUTES", "AIVideoTag=-1", "from 0 to"),
        ("TRACKER_DAILY_MINUTES", "AIVideoTag=nan", "from 0 to"),
        ("TRACKER_PRICE_PER_MINUTE", "AIMediaDNA=inf", "from 0 to"),
        ("TRACKER_CURRENCY", "dollars", ""),
    ],
)
def test_a_bad_budget_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, says: str
) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(ConfigError, match=rf"^{name}: .*{re.escape(says)}"):
        load_settings()


def test_the_types_a_budget_may_name_are_vod_s_job_types() -> None:
    assert JOB_TYPE_NAMES == JOB_TYPES  # config cannot import tracker.vod (it imports config)


# --- regions and endpoints (issue 23, P7): the rule of a job's region, for the settings too ---


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRACKER_VOD_REGION", "x@127.0.0.1:9000/"),
        ("TRACKER_VOD_REGION", "attacker.example/x?"),
        ("TRACKER_VOD_REGION", "CN-SHANGHAI"),
        ("TRACKER_VOD_REGION", ""),
        ("TRACKER_VOD_ENDPOINTS", "cn-shanghai=ftp://x"),
        ("TRACKER_VOD_ENDPOINTS", "cn-shanghai=http://127.0.0.1:9000,cn-shanghai=http://a"),
        ("TRACKER_VOD_ENDPOINTS", "cn-shanghai=http://user:pw@127.0.0.1:9000"),
        ("TRACKER_VOD_ENDPOINTS", "x@127.0.0.1=http://127.0.0.1:9000"),
        ("TRACKER_VOD_ENDPOINTS", "cn-shanghai=http://127.0.0.1:9000/x?token=s3cret"),
        ("TRACKER_VOD_ENDPOINT", "javascript:alert(1)"),
        ("TRACKER_VOD_ENDPOINT", "http://user:s3cret@127.0.0.1:9000"),
        ("TRACKER_VOD_ENDPOINT", "http://127.0.0.1:9000/?token=s3cret"),
        ("TRACKER_VOD_ENDPOINT", "http://127.0.0.1:99999"),
        ("TRACKER_VOD_ENDPOINT", "http://"),
        ("TRACKER_VOD_ENDPOINT", "vod.cn-shanghai.aliyuncs.com"),
    ],
)
def test_a_bad_region_or_endpoint_names_the_variable_and_quotes_no_secret(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=rf"^{variable}: ") as refused:
        load_settings()
    said = str(refused.value)
    assert "\n" not in said
    assert "s3cret" not in said
    assert "pw@" not in said


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRACKER_VOD_REGION", "ap-southeast-1"),
        ("TRACKER_VOD_ENDPOINT", "http://127.0.0.1:9000"),
        ("TRACKER_VOD_ENDPOINT", "https://vod.cn-shanghai.aliyuncs.com/"),
        ("TRACKER_VOD_ENDPOINT", "http://[::1]:9000"),
        ("TRACKER_VOD_ENDPOINT", ""),  # docker-compose passes an unset variable as empty
        ("TRACKER_VOD_ENDPOINTS", "cn-shanghai=http://127.0.0.1:9000,cn-beijing=http://h:1"),
        ("TRACKER_VOD_ENDPOINTS", ""),
    ],
)
def test_regions_and_endpoints_of_vods_shape_are_taken(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    settings = load_settings()
    assert settings.vod_url.startswith(("http://", "https://"))
    if variable == "TRACKER_VOD_ENDPOINT" and not value:
        assert settings.vod_endpoint is None
