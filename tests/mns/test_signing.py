"""The V2 signature against the official SDK's own outputs (mns-reference.md 2.2) and the
client's requests on the wire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tracker.config import Settings
from tracker.mns.client import MnsClient
from tracker.mns.signing import (
    StaticCredentials,
    StaticKey,
    authorization,
    content_md5,
    sign,
    string_to_sign,
)

DATE = "Thu, 15 Jan 2026 08:30:00 GMT"
VERSION = {"x-mns-version": "2015-06-06"}
TV2_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?><Message xmlns="http://mns.aliyuncs.com/doc/v1/">'
    b"<MessageBody>{&quot;EventType&quot;:&quot;AIVideoTagComplete&quot;,&quot;JobId&quot;:"
    b"&quot;j1&quot;}</MessageBody></Message>"
)


def test_tv1_receive_long_poll() -> None:
    text = string_to_sign(
        "GET", "", "", DATE, VERSION, "/queues/vod-events/messages?waitseconds=30"
    )
    assert text == (
        "GET\n\n\nThu, 15 Jan 2026 08:30:00 GMT\nx-mns-version:2015-06-06\n"
        "/queues/vod-events/messages?waitseconds=30"
    )
    signature = sign(text, "testsecret")
    assert authorization("testid", signature) == "MNS testid:pjgjks2X7e9+/J3ZubIpW0s5yyI="


def test_tv2_send_with_body_and_content_md5() -> None:
    assert len(TV2_BODY) == 211
    md5 = content_md5(TV2_BODY)
    assert md5 == "MDU2MjNlODYxMzc1ZDY0ZWM0NTVmZmM5MWMxNjQ4ZWI="
    text = string_to_sign(
        "POST", md5, "text/xml;charset=UTF-8", DATE, VERSION, "/queues/vod-events/messages"
    )
    assert sign(text, "testsecret") == "LOJLmnAwNF7XLRKBUTnhFcyAvgc="


def test_tv3_delete_signs_the_raw_receipt_handle() -> None:
    resource = "/queues/vod-events/messages?ReceiptHandle=1-ODU4OTkzNDU5My0xNDMyNzI3ODI3LTItOA=="
    text = string_to_sign("DELETE", "", "", DATE, VERSION, resource)
    assert sign(text, "testsecret") == "9Hp5XfweILP5fbONJKNP92+CyLk="


def test_doc_example_and_header_canonicalisation() -> None:
    text = string_to_sign(
        "GET", "", "", "Thu, 09 Jul 2015 03:01:34 GMT", {"X-MNS-Version": "2015-06-06"}, "/MyQueue"
    )
    assert sign(text, "TestAccessSecret") == "uwx3yeWoILzgmvesW0BQSgfM7b8="
    # Only x-mns-* headers, lower-cased and sorted; others never enter the string.
    text = string_to_sign(
        "GET", "", "", DATE, {"x-mns-version": "1", "X-MNS-A": "2", "security-token": "t"}, "/q"
    )
    assert text.endswith("x-mns-a:2\nx-mns-version:1\n/q")


def test_static_credentials_come_from_the_vod_settings() -> None:
    settings = Settings(
        access_key_id="LTAIkey", access_key_secret="secret", security_token="sts-token"
    )
    key = asyncio.run(StaticCredentials.from_settings(settings).get())
    assert (key.access_key_id, key.access_key_secret, key.security_token) == (
        "LTAIkey",
        "secret",
        "sts-token",
    )
    assert "secret" not in repr(key)
    assert "sts-token" not in repr(key)
    with pytest.raises(ValueError, match="ACCESS_KEY"):
        StaticCredentials.from_settings(Settings())


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """A loopback server that records what arrives and answers an empty 204."""
    seen: list[web.Request] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        seen.append(request)
        return web.Response(status=204, headers={"x-mns-request-id": "r1"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_wire_request_is_signed_over_exactly_what_is_sent(
    recorder: tuple[str, list[web.Request]],
) -> None:
    url, seen = recorder
    key = StaticKey("testid", "testsecret", "testststoken")
    async with MnsClient(url, StaticCredentials(key)) as client:
        await client.delete("vod-events", ["1-ODU4OTkzNDU5My0xNDMyNzI3ODI3LTItOA=="])
        await client.create_queue("vod-events")
    delete, create = seen
    assert delete.raw_path == "/queues/vod-events/messages"
    assert delete.headers["Content-Type"] == "text/xml;charset=UTF-8"  # not aiohttp's own
    assert delete.headers["security-token"] == "testststoken"
    for request in (delete, create):
        text = string_to_sign(
            request.method,
            request.headers.get("Content-MD5", ""),
            request.headers.get("Content-Type", ""),
            request.headers["Date"],
            {n: v for n, v in request.headers.items() if n.lower().startswith("x-mns-")},
            request.raw_path,
        )
        assert request.headers["Authorization"] == authorization("testid", sign(text, "testsecret"))
        assert request.headers["x-mns-version"] == "2015-06-06"
