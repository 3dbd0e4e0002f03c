"""SSRF guard for upstream fetches: Next 16's private-IP table and a resolve-once DNS lookup.

``is_private_ip`` reproduces ``server/is-private-ip.ts``: an address is private unless its
``ipaddr.js`` range is ``unicast``. Python's ``ipaddress.is_global`` uses a different table, so
the ranges are listed explicitly (``server/is-private-ip.ts``), plus two that embed an IPv4
address (docs/compatibility.md's deviations table).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable

import anyio

from handler.contract import errors
from handler.contract.errors import ImageError

Resolver = Callable[[str], Awaitable[list[str]]]
"""Resolve a hostname to every address it has (like ``dns.lookup(all: true)``)."""

_IPV4_RANGES = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.31.196.0/24",
        "192.52.193.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "192.175.48.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
    )
)
_IPV6_RANGES = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/128",
        "::1/128",
        "fe80::/10",
        "fc00::/7",
        "ff00::/8",
        "100::/64",
        "64:ff9b::/96",
        "::ffff:0:0:0/96",
        "2002::/16",
        "2001::/23",
        "2001:db8::/32",
        "2620:4f:8000::/48",
        # Safer than Next: ipaddr.js calls these unicast, but both embed an IPv4 address that a
        # translator may reach (IPv4-compatible, deprecated; local-use NAT64, RFC 8215).
        "::/96",
        "64:ff9b:1::/48",
    )
)
# ipaddr.js also accepts the classful IPv4 forms (``0x7f.1``, ``2130706433``, octal parts), as
# inet_aton does; the character check keeps inet_aton's trailing-garbage leniency out.
_LOOSE_IPV4 = re.compile(r"[0-9a-fA-FxX.]+")


def _parse(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        pass
    if not _LOOSE_IPV4.fullmatch(ip):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(ip))
    except OSError:
        return None


def is_private_ip(ip: str) -> bool:
    """True when ``ip`` is outside ipaddr.js's ``unicast`` range; an invalid IP is not private."""
    address = _parse(ip.removeprefix("[").removesuffix("]"))
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return any(address in net for net in _IPV4_RANGES)
    return any(address in net for net in _IPV6_RANGES)


async def system_lookup(hostname: str) -> list[str]:
    """Every address of ``hostname`` from the system resolver, as Node's ``dns.lookup`` gets them.

    A resolution failure is an upstream failure worth a retry: 502 (Next answers a bare 500).
    """
    try:
        infos = await anyio.getaddrinfo(
            hostname, None, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG
        )
    except OSError as exc:
        raise ImageError(502, errors.UPSTREAM_INVALID, category="upstream", transient=True) from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve(hostname: str, *, resolver: Resolver = system_lookup) -> list[str]:
    """The addresses to connect to: a literal IP as is, otherwise one lookup."""
    try:
        return [str(ipaddress.ip_address(hostname))]
    except ValueError:
        pass
    addresses = await resolver(hostname)
    if not addresses:
        raise ImageError(502, errors.UPSTREAM_INVALID, category="upstream", transient=True)
    return addresses


async def resolve_public(hostname: str, *, resolver: Resolver = system_lookup) -> list[str]:
    """Resolve once and refuse if ANY address is private; return the addresses to pin to."""
    addresses = await resolve(hostname, resolver=resolver)
    if any(is_private_ip(address) for address in addresses):
        # Next's 400 and message, but the URL passed validation: where its host resolves is the
        # source's doing, so it is not counted with a client's bad parameters.
        raise ImageError(400, errors.URL_NOT_ALLOWED, category="upstream")
    return addresses
