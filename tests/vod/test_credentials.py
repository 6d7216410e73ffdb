"""Credentials: which source is used, STS refreshed before expiry, every request signed with the
current ones, against the simulator's credentials URI (alibabacloud-credentials' own provider)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alibabacloud_credentials.provider import (
    EcsRamRoleCredentialsProvider,
    OIDCRoleArnCredentialsProvider,
    ProfileCredentialsProvider,
    StaticAKCredentialsProvider,
    URLCredentialsProvider,
)
from pydantic import SecretStr
from sqlalchemy import func, select

from tracker.clock import FrozenClock
from tracker.config import Settings, load_settings
from tracker.db import Database
from tracker.errors import ConfigError
from tracker.fakevod import FakeVod, Faults
from tracker.models import Job, JobState
from tracker.submit.claims import SubmitRequest
from tracker.submit.service import submit_media
from tracker.vod import (
    AccessKey,
    Credentials,
    CredentialsUnavailable,
    VodClient,
    VodError,
    VodUnreachable,
    credentials_from_settings,
    static_credentials,
)

KEY_ID, KEY_SECRET = "base-key-id", "base-key-secret"


@pytest.fixture
async def sts_fake() -> AsyncIterator[FakeVod]:
    fake = FakeVod(
        access_key_id=KEY_ID, access_key_secret=KEY_SECRET, sts_ttl=3, faults=Faults(delay=0.05)
    )
    await fake.start()
    yield fake
    await fake.stop()


def uri_settings(fake: FakeVod, **more: object) -> Settings:
    return Settings(
        credentials_uri=fake.credentials_uri,
        vod_endpoint=fake.url,
        vod_retries=1,
        **more,  # type: ignore[arg-type]
    )


# --- which source -------------------------------------------------------------------------------


def test_nothing_configured_means_no_credentials_and_no_metadata_service() -> None:
    # The library's default chain would ask the ECS metadata service here; ours has no source.
    settings = Settings()
    assert not settings.has_vod_credentials
    assert credentials_from_settings(settings) is None


def test_each_source_is_taken_only_when_configured(tmp_path: Path) -> None:
    keys = credentials_from_settings(
        Settings(access_key_id="id", access_key_secret=SecretStr("secret"))
    )
    assert keys is not None
    assert isinstance(keys.provider, StaticAKCredentialsProvider)
    token = tmp_path / "token"
    token.write_text("oidc-token")
    rrsa = Settings(
        role_arn="acs:ram::1:role/tracker",
        oidc_provider_arn="acs:ram::1:oidc-provider/ack",
        oidc_token_file=str(token),
    )
    oidc = credentials_from_settings(rrsa)
    assert oidc is not None
    assert isinstance(oidc.provider, OIDCRoleArnCredentialsProvider)
    assert "acs:ram::1:role/tracker" in oidc.source
    # Two of the three OIDC variables are not a source.
    assert credentials_from_settings(Settings(role_arn="acs:ram::1:role/x")) is None
    ecs = credentials_from_settings(Settings(ecs_metadata="TrackerRole"))
    assert ecs is not None
    assert isinstance(ecs.provider, EcsRamRoleCredentialsProvider)
    assert ecs.source == "ECS RAM role TrackerRole"
    uri = credentials_from_settings(Settings(credentials_uri="http://127.0.0.1:1/credentials"))
    assert uri is not None
    assert isinstance(uri.provider, URLCredentialsProvider)
    # Keys in the environment come first, as in the library's chain.
    both = Settings(
        access_key_id="id",
        access_key_secret=SecretStr("secret"),
        credentials_uri="http://127.0.0.1:1/credentials",
        ecs_metadata="TrackerRole",
    )
    first = credentials_from_settings(both)
    assert first is not None
    assert isinstance(first.provider, StaticAKCredentialsProvider)


def test_settings_read_the_library_variable_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_CREDENTIALS_URI", "http://127.0.0.1:9/credentials")
    monkeypatch.setenv("ALIBABA_CLOUD_ECS_METADATA", "TrackerRole")
    monkeypatch.setenv("TRACKER_VOD_ENDPOINTS", "cn-beijing=http://127.0.0.1:9001")
    settings = Settings()
    assert settings.credentials_uri == "http://127.0.0.1:9/credentials"
    assert settings.ecs_metadata == "TrackerRole"
    assert settings.has_vod_credentials
    assert settings.vod_url_for("cn-beijing") == "http://127.0.0.1:9001"
    assert settings.vod_url_for("cn-shanghai") == "https://vod.cn-shanghai.aliyuncs.com"


def test_a_bad_endpoint_list_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKER_VOD_ENDPOINTS", "cn-beijing=http://127.0.0.1:9001,cn-shanghai")
    with pytest.raises(ConfigError, match="TRACKER_VOD_ENDPOINTS: .*region=url"):
        load_settings()


async def test_profile_file(tmp_path: Path) -> None:
    profile = tmp_path / "credentials.ini"
    profile.write_text(
        "[default]\ntype = access_key\naccess_key_id = default-id\naccess_key_secret = s0\n"
        "[tracker]\ntype = access_key\naccess_key_id = tracker-id\naccess_key_secret = s1\n"
    )
    settings = Settings(credentials_file=str(profile), profile="tracker")
    credentials = credentials_from_settings(settings)
    assert credentials is not None
    assert isinstance(credentials.provider, ProfileCredentialsProvider)
    assert await credentials.get() == AccessKey("tracker-id", "s1")


async def test_oidc_rrsa_assumes_the_role_with_the_current_token(tmp_path: Path) -> None:
    """RRSA as on ACK: the pod's token file is read at each refresh (kubelet rotates it) and
    AssumeRoleWithOIDC, here the simulator's over loopback, hands out STS credentials."""
    # Credentials that live a minute of real time: the simulator checks them by its own clock,
    # so a loaded machine cannot let the first ones expire before VOD is asked.
    sts_fake = FakeVod(access_key_id=KEY_ID, access_key_secret=KEY_SECRET, sts_ttl=60)
    await sts_fake.start()
    try:
        await _assume_the_role_twice(sts_fake, tmp_path)
    finally:
        await sts_fake.stop()
    assert sts_fake.oidc_tokens == ["oidc-token-1", "oidc-token-2"]
    assert sts_fake.gateway.sts_accepted == 2


async def _assume_the_role_twice(sts_fake: FakeVod, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("oidc-token-1")
    settings = Settings(
        role_arn="acs:ram::1:role/tracker",
        oidc_provider_arn="acs:ram::1:oidc-provider/ack",
        oidc_token_file=str(token),
        sts_endpoint=sts_fake.url,
        vod_endpoint=sts_fake.url,
        vod_retries=0,
    )
    now = [time.time()]
    made = credentials_from_settings(settings)
    assert made is not None
    credentials = Credentials(made.provide, made.source, wall=lambda: now[0])
    async with VodClient(settings, credentials=credentials) as vod:
        await vod.list_ai_jobs(["a"])
        token.write_text("oidc-token-2")
        # A refresh is due: the wall moves past the credentials' expiry, which the simulator set
        # by the real clock at issue, so at most `sts_ttl` from now. (A fixed step from the wall
        # read at the start was not always enough: the expiry counts from the first fetch,
        # which a loaded machine makes later, and is rounded to the second.)
        now[0] = time.time() + 60
        await vod.list_ai_jobs(["b"])


async def test_a_source_that_fails_is_an_unavailable_error(tmp_path: Path) -> None:
    credentials = credentials_from_settings(Settings(credentials_file=str(tmp_path / "none.ini")))
    assert credentials is not None
    with pytest.raises(CredentialsUnavailable, match="profile"):
        await credentials.get()


# --- refresh ------------------------------------------------------------------------------------


async def test_sts_credentials_are_refreshed_before_they_expire(sts_fake: FakeVod) -> None:
    now = [time.time()]
    credentials = credentials_from_settings(uri_settings(sts_fake))
    assert credentials is not None
    credentials = Credentials(credentials.provide, credentials.source, wall=lambda: now[0])
    first = await credentials.get()
    assert first.security_token
    assert first.access_key_id.startswith("STS.")
    assert await credentials.get() == first  # cached: asked once
    assert sts_fake.gateway.sts_issued == 1
    # About two thirds of its (up to 3 s) life later a refresh is due; it has not expired yet.
    now[0] += 2.1
    second = await credentials.get()
    assert second != first
    assert sts_fake.gateway.sts_issued == 2


async def test_concurrent_callers_share_one_refresh(sts_fake: FakeVod) -> None:
    credentials = credentials_from_settings(uri_settings(sts_fake))
    assert credentials is not None
    keys = await asyncio.gather(*(credentials.get() for _ in range(20)))
    assert len(set(keys)) == 1
    assert sts_fake.gateway.sts_issued == 1


# --- signing ------------------------------------------------------------------------------------


async def test_security_token_is_signed_and_checked(sts_fake: FakeVod) -> None:
    sts = sts_fake.gateway.issue_sts()
    key = AccessKey(sts.access_key_id, sts.access_key_secret, sts.security_token)
    settings = Settings(vod_endpoint=sts_fake.url, vod_retries=0)
    async with VodClient(settings, credentials=static_credentials(key)) as vod:
        assert (await vod.list_ai_jobs(["nope"])).missing == ["nope"]
    wrong = AccessKey(sts.access_key_id, sts.access_key_secret, "another-token")
    async with VodClient(settings, credentials=static_credentials(wrong)) as vod:
        with pytest.raises(VodError) as refused:
            await vod.list_ai_jobs(["nope"])
    assert refused.value.vod_code == "InvalidSecurityToken.MismatchWithAccessKey"
    assert "another-token" not in str(refused.value)


async def test_expired_sts_credentials_are_refused(sts_fake: FakeVod) -> None:
    sts_fake.gateway.sts_ttl = 1
    sts = sts_fake.gateway.issue_sts()
    key = AccessKey(sts.access_key_id, sts.access_key_secret, sts.security_token)
    await asyncio.sleep(max(0.0, sts.expires_at - time.time()) + 0.05)
    settings = Settings(vod_endpoint=sts_fake.url, vod_retries=0)
    async with VodClient(settings, credentials=static_credentials(key)) as vod:
        with pytest.raises(VodError) as refused:
            await vod.list_ai_jobs(["nope"])
    assert refused.value.vod_code == "InvalidSecurityToken.Expired"


async def test_credentials_revoked_early_are_renewed_and_the_call_sent_again(
    sts_fake: FakeVod,
) -> None:
    # An hour's credentials: the library alone would keep handing out its cached ones.
    sts_fake.gateway.sts_ttl = 3600
    async with VodClient(uri_settings(sts_fake)) as vod:
        await vod.list_ai_jobs(["a"])
        sts_fake.gateway._sts.clear()  # revoked: VOD no longer knows the key
        assert (await vod.list_ai_jobs(["b"])).missing == ["b"]
    assert sts_fake.gateway.sts_issued == 2
    assert sts_fake.refused == {"InvalidAccessKeyId.NotFound": 1}


async def test_no_credentials_means_nothing_sent(sts_fake: FakeVod, tmp_path: Path) -> None:
    settings = Settings(credentials_uri=f"{sts_fake.url}/missing", vod_endpoint=sts_fake.url)
    async with VodClient(settings, backoff=0.001) as vod:
        with pytest.raises(VodUnreachable, match="not sent"):
            await vod.list_ai_jobs(["a"])
    assert sts_fake.requests == 0


async def test_a_submission_stream_across_rotations_loses_nothing(
    sts_fake: FakeVod, database: Database, clock: FrozenClock
) -> None:
    """About four rotations of 3 s STS credentials while media are submitted back to back."""
    media = 0
    async with VodClient(uri_settings(sts_fake, vod_rate_limit=1000.0)) as vod:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done = await submit_media(
                database, vod, SubmitRequest(f"m{media}", ("AIVideoTag",)), clock
            )
            assert done.error is None, done.error
            media += 1
            await asyncio.sleep(0.02)
        refreshes = vod.credentials.refreshes
    assert refreshes >= 3
    assert sts_fake.gateway.sts_issued == refreshes
    assert sts_fake.submit_calls == media
    assert len(sts_fake.jobs) == media
    async with database.session() as session:
        states = dict(
            (await session.execute(select(Job.state, func.count()).group_by(Job.state))).all()
        )
    assert states == {JobState.PROCESSING.value: media}
