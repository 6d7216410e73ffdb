"""Secrets never leave (issue 23, P1): a credentials source that answers with secrets in an
answer the library refuses (a 200 without Expiration, a 500 quoting them, a profile file it
cannot parse) makes every submission fail, and the failure crosses every boundary: the answer to
`POST /jobs`, the job's message in `GET /jobs` and `GET /media/{m}/jobs`, the change log, a
delivered webhook and the log. None of them may quote the secret, the STS token or the token in
the credentials URI's query."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from alibabacloud_credentials.provider import EcsRamRoleCredentialsProvider
from asgi_lifespan import LifespanManager

from tests.notify.receivers import Receiver
from tracker.app import create_app
from tracker.config import Settings

SECRET = "HostileSecret5f2c"  # an AccessKeySecret the hostile answers carry
STS_TOKEN = "HostileStsToken91ab"
URI_TOKEN = "UriToken7d3e"  # in the credentials URI's query
ROLE = "TrackerRole"
SECRETS = (SECRET, STS_TOKEN, URI_TOKEN)

LEAKY = {"Code": "Success", "AccessKeyId": "STS.leaky", "AccessKeySecret": SECRET}
WITHOUT_EXPIRATION = {**LEAKY, "SecurityToken": STS_TOKEN}  # all but Expiration


@dataclass
class Hostile:
    """A credentials service on loopback whose answers carry secrets: `status` and `body` for
    every source it plays (credentials URI, STS, ECS metadata)."""

    status: int
    body: dict[str, Any]
    url: str = ""
    asked: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.asked += 1
        if request.method == "PUT":  # ECS metadata: the IMDSv2 token
            return web.Response(text="metadata-token")
        if request.path == "/latest/meta-data/ram/security-credentials/":
            return web.Response(text=ROLE)
        body = self.body
        if request.query.get("Action") == "AssumeRoleWithOIDC":  # STS wraps them
            body = {"RequestId": "r1", "Credentials": body}
        return web.json_response(body, status=self.status)


@pytest.fixture
async def hostile(request: pytest.FixtureRequest) -> AsyncIterator[Hostile]:
    service = Hostile(*request.param)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", service.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    service.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield service
    await runner.cleanup()


@pytest.fixture
def local_metadata(hostile: Hostile, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ECS metadata service is 100.100.100.200 in the library: here it is the hostile one."""
    host = hostile.url.removeprefix("http://")

    class LocalMetadata(EcsRamRoleCredentialsProvider):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._EcsRamRoleCredentialsProvider__metadata_service_host = host

    monkeypatch.setattr("tracker.vod.credentials.EcsRamRoleCredentialsProvider", LocalMetadata)
    monkeypatch.setattr(
        "alibabacloud_credentials.provider.profile.EcsRamRoleCredentialsProvider", LocalMetadata
    )


def source_settings(source: str, hostile: Hostile, tmp_path: Path) -> dict[str, Any]:
    """The settings that make `source` the credentials, pointed at the hostile service."""
    if source == "uri":
        return {"credentials_uri": f"{hostile.url}/creds?token={URI_TOKEN}&role={ROLE}"}
    if source == "oidc":
        token = tmp_path / "oidc-token"
        token.write_text("oidc-token")
        return {
            "role_arn": "acs:ram::1:role/tracker",
            "oidc_provider_arn": "acs:ram::1:oidc-provider/ack",
            "oidc_token_file": str(token),
            "sts_endpoint": hostile.url,
        }
    if source == "ecs":
        return {"ecs_metadata": ROLE}
    profile = tmp_path / "credentials.ini"
    if source == "profile-ecs":
        profile.write_text(f"[default]\ntype = ecs_ram_role\nrole_name = {ROLE}\n")
    else:  # a profile file the library cannot parse, with the secret on the line it quotes
        profile.write_text(f"[default]\ntype = access_key\naccess_key_secret {SECRET}\n")
    return {"credentials_file": str(profile)}


ANSWERS = [
    pytest.param((200, WITHOUT_EXPIRATION), id="200-without-expiration"),
    pytest.param((200, LEAKY), id="200-without-token"),
    pytest.param((500, WITHOUT_EXPIRATION), id="500-quoting-them"),
]


@pytest.mark.parametrize("hostile", ANSWERS, indirect=True)
@pytest.mark.parametrize("source", ["uri", "oidc", "ecs", "profile-ecs", "profile-malformed"])
@pytest.mark.usefixtures("local_metadata")
async def test_no_channel_quotes_a_secret_of_a_hostile_credentials_answer(
    source: str,
    hostile: Hostile,
    database_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # what `tracker serve` logs
    receiver = Receiver()
    await receiver.start()
    settings = Settings(
        database_url=database_url,
        scheduler="off",
        notify_allow_private="on",  # the receiver is on loopback
        notify_timeout=timedelta(seconds=2),
        vod_endpoint="http://127.0.0.1:9",  # never reached: no credentials, nothing sent
        vod_retries=0,
        **source_settings(source, hostile, tmp_path),
    )
    app = create_app(settings)
    seen: list[str] = []
    try:
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                made = await http.post("/subscriptions", json={"url": receiver.url})
                assert made.status_code == 201, made.text
                submitted = await http.post(
                    "/jobs", json={"media_id": "m1", "types": ["AIVideoTag"]}
                )
                assert submitted.status_code == 502, submitted.text
                said = submitted.json()["message"]
                seen.append(submitted.text)
                for path in ("/jobs", "/jobs?media_id=m1", "/media/m1/jobs", "/changes?after=0"):
                    answer = await http.get(path)
                    assert answer.status_code == 200, answer.text
                    seen.append(answer.text)
                await receiver.wait_for(1)
                seen.extend(r.body.decode() for r in receiver.received)
    finally:
        await receiver.stop()
    seen.append(caplog.text)
    seen.extend(json.dumps(r.args, default=str) for r in caplog.records)
    # The failure names the source and its kind...
    assert "no credentials from" in said, said
    if hostile.status == 500 and source != "profile-malformed":
        assert "answered HTTP 500" in said, said
    if source == "uri":
        assert f"ALIBABA_CLOUD_CREDENTIALS_URI at {hostile.url}/..." in said, said
        assert (
            f"VOD credentials from ALIBABA_CLOUD_CREDENTIALS_URI at {hostile.url}/" in caplog.text
        )
    if source == "profile-malformed":
        assert "not a valid ini file" in said, said
    assert any(said in text for text in seen[1:-2]), "the job's message is the same"
    # ...and no channel quotes a secret, whatever the library put in its exception.
    for text in seen:
        for secret in SECRETS:
            assert secret not in text, f"{secret} leaked: {text[:2000]}"
