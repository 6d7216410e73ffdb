"""Egress safety: webhooks go only to public http(s) addresses unless the operator allows more.

A URL is checked when a subscription is created or changed and again before the attempts, at
least every VERDICT_SECONDS (`RecentVerdicts`: a relay does not resolve a receiver's name before
each of its thousands of requests); the HTTP client resolves through `GuardedResolver` as well,
so a name that resolves to a public address when checked and to a private one when connecting
(DNS rebinding) is still refused.
Loopback, private, link-local (which holds the cloud metadata address 169.254.169.254),
shared (100.64.0.0/10, where Alibaba Cloud's metadata 100.100.100.200 lives), every IPv6 form
that embeds an IPv4 address (NAT64, IPv4-compatible, -mapped and -translated, 6to4, Teredo), the
deprecated site-local fec0::/10 and every other non-global range are refused unless
TRACKER_NOTIFY_ALLOW_PRIVATE=on (notifications-reference.md, section 5, item 10).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from tracker.errors import BadRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL = 2048
VERDICT_SECONDS = 10.0  # as long as aiohttp's client keeps an address it resolved
VERDICTS_KEPT = 4_096


class EgressRefused(BadRequest):
    code = "egress_refused"


# IPv6 ranges that carry an IPv4 address (or, site-local, were never global), refused whole:
# on a network that translates them (NAT64, 6to4, Teredo) the IPv4 address inside is reached,
# and which translator prefixes a network uses (RFC 6052 allows its own) cannot be known here,
# so judging the embedded address would be judging half the cases. No webhook receiver needs
# to be named through one of these; TRACKER_NOTIFY_ALLOW_PRIVATE=on still allows them.
EMBEDDING = tuple(
    (ipaddress.IPv6Network(network), why)
    for network, why in (
        ("64:ff9b::/96", "NAT64 (embeds an IPv4 address)"),
        ("64:ff9b:1::/48", "local NAT64 (embeds an IPv4 address)"),
        ("::/96", "IPv4-compatible (embeds an IPv4 address)"),
        ("::ffff:0:0/96", "IPv4-mapped (embeds an IPv4 address)"),
        ("::ffff:0:0:0/96", "IPv4-translated (embeds an IPv4 address)"),
        ("2002::/16", "6to4 (embeds an IPv4 address)"),
        ("2001::/32", "Teredo (embeds an IPv4 address)"),
        ("fec0::/10", "site-local (deprecated)"),
    )
)


def refusal(address: IPAddress) -> str | None:
    """Why an address is no place for a webhook, or None when it is a public one."""
    if address.is_loopback:  # ::1 first: it is also in ::/96
        return "loopback"
    if isinstance(address, ipaddress.IPv6Address):
        for network, why in EMBEDDING:
            if address in network:
                return why
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (cloud metadata)"
    if address.is_private:
        return "private"
    if address in ipaddress.ip_network("100.64.0.0/10"):
        return "shared address space (cloud metadata)"
    if not address.is_global or address.is_multicast:
        return "not a public address"
    return None


def check_address(host: str, address: str, allow_private: bool) -> None:
    if allow_private:
        return
    why = refusal(ipaddress.ip_address(address.split("%", 1)[0]))
    if why is not None:
        raise EgressRefused(
            f"url: {host} resolves to {address}, a {why} address; webhooks go to public "
            "addresses only (TRACKER_NOTIFY_ALLOW_PRIVATE=on allows others)",
            parameter="url",
        )


def parse_url(url: object) -> tuple[str, str, int]:
    """Scheme, host and port of an http(s) URL; anything else is a 400."""
    if not isinstance(url, str) or not url.strip():
        raise EgressRefused("url: required, an http(s) URL", parameter="url")
    if len(url) > MAX_URL:
        raise EgressRefused(f"url: longer than {MAX_URL} characters", parameter="url")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise EgressRefused(f"url: not a valid URL ({exc})", parameter="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EgressRefused("url: an http or https URL with a host", parameter="url")
    if parts.username is not None or parts.password is not None:
        raise EgressRefused("url: credentials in the URL are not accepted", parameter="url")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_url(url: object, *, allow_private: bool) -> str:
    """The URL, stripped, once its host resolves to allowed addresses only; else a 400."""
    _, host, port = parse_url(url)
    assert isinstance(url, str)
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        check_address(host, str(literal), allow_private)
        return url.strip()
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise EgressRefused(f"url: {host} does not resolve ({exc})", parameter="url") from None
    for info in infos:
        check_address(host, str(info[4][0]), allow_private)
    return url.strip()


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing names that resolve to a forbidden address at connect time."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for entry in found:
            try:
                check_address(host, entry["host"], self.allow_private)
            except EgressRefused as exc:
                raise OSError(exc.message) from None
        return found

    async def close(self) -> None:
        await self._inner.close()


class RecentVerdicts:
    """`check_url`'s verdicts, each kept VERDICT_SECONDS: refusals as much as passes."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, bool], tuple[float, str | None]] = {}

    async def check(self, url: str, *, allow_private: bool) -> None:
        """Raise EgressRefused as `check_url` did for `url` at most VERDICT_SECONDS ago."""
        key, now = (url, allow_private), time.monotonic()
        kept = self._kept.get(key)
        if kept is None or kept[0] <= now:
            try:
                await check_url(url, allow_private=allow_private)
                refused = None
            except EgressRefused as exc:
                refused = exc.message
            if len(self._kept) >= VERDICTS_KEPT:
                self._kept.clear()
            kept = self._kept[key] = (now + VERDICT_SECONDS, refused)
        if kept[1] is not None:
            raise EgressRefused(kept[1], parameter="url")
