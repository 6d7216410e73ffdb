"""The egress guard: webhooks go to public addresses only, whatever form the address takes."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from tracker.notify import egress
from tracker.notify.egress import EgressRefused, GuardedResolver, check_url

# IPv6 forms that carry an IPv4 address, and the deprecated site-local range (issue 23, P8). On
# a NAT64 or 6to4 network each reaches the IPv4 address inside it, here 127.0.0.1 or 10.0.0.1.
EMBEDDED = [
    "64:ff9b::7f00:1",  # NAT64, well-known prefix (RFC 6052)
    "64:ff9b::808:808",  # ... even to a public IPv4: the translator's own network decides
    "64:ff9b:1::a00:1",  # NAT64, local-use prefix (RFC 8215)
    "::127.0.0.1",  # IPv4-compatible (deprecated, RFC 4291)
    "::8.8.8.8",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:8.8.8.8",
    "::ffff:0:7f00:1",  # IPv4-translated (SIIT, RFC 2765)
    "2002:7f00:1::",  # 6to4 (RFC 3056)
    "2002:808:808::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo (RFC 4380)
    "fec0::1",  # site-local (deprecated, RFC 3879)
]


@pytest.mark.parametrize("address", EMBEDDED)
async def test_ipv6_forms_that_embed_ipv4_are_refused(address: str) -> None:
    with pytest.raises(EgressRefused, match="TRACKER_NOTIFY_ALLOW_PRIVATE"):
        await check_url(f"http://[{address}]:8080/hook", allow_private=False)
    assert await check_url(f"http://[{address}]/hook", allow_private=True)


@pytest.mark.parametrize("address", EMBEDDED)
async def test_the_resolver_refuses_them_at_connect_time(address: str) -> None:
    """A name resolving to one of them when the webhook is sent (DNS rebinding) is refused
    too: the literal goes through the same resolver aiohttp connects with."""
    resolver = GuardedResolver(allow_private=False)
    try:
        with pytest.raises(OSError, match="webhooks go to public addresses only"):
            await resolver.resolve(address, 443, socket.AF_UNSPEC)
    finally:
        await resolver.close()


@pytest.mark.parametrize("address", ["2606:4700:4700::1111", "2001:4860:4860::8888"])
async def test_public_ipv6_is_taken(address: str) -> None:
    assert await check_url(f"https://[{address}]/hook", allow_private=False)


@pytest.mark.parametrize("address", EMBEDDED)
async def test_the_api_refuses_them_with_a_400(client: httpx.AsyncClient, address: str) -> None:
    answer = await client.post("/subscriptions", json={"url": f"http://[{address}]/hook"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "egress_refused"
    assert (await client.get("/subscriptions")).json() == {"items": []}


async def test_recent_verdicts_are_kept_a_while_then_checked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A relay checks a receiver's URL once per VERDICT_SECONDS, refusals as much as passes,
    not before each of its requests (a name is resolved each time it is checked)."""
    checked: list[str] = []

    async def counted(url: str, *, allow_private: bool) -> str:
        checked.append(url)
        return await check_url(url, allow_private=allow_private)

    monkeypatch.setattr(egress, "check_url", counted)
    monkeypatch.setattr(egress, "VERDICT_SECONDS", 0.5)  # literal addresses: microseconds each
    verdicts = egress.RecentVerdicts()
    for _ in range(3):
        await verdicts.check("http://8.8.8.8/hook", allow_private=False)
        with pytest.raises(EgressRefused, match="127.0.0.1"):
            await verdicts.check("http://127.0.0.1/hook", allow_private=False)
    await verdicts.check("http://127.0.0.1/hook", allow_private=True)  # another verdict
    assert checked == ["http://8.8.8.8/hook", *["http://127.0.0.1/hook"] * 2]
    await asyncio.sleep(0.6)  # every verdict kept is now too old
    await verdicts.check("http://8.8.8.8/hook", allow_private=False)
    assert checked[-1] == "http://8.8.8.8/hook"
    assert len(checked) == 4
