"""The private-IP table of Next 16's ``isPrivateIp`` (ipaddr.js ranges).

Next's code: ``packages/next/src/server/is-private-ip.ts``.
"""

from __future__ import annotations

import socket

import pytest

from handler.contract import errors
from handler.contract.errors import ImageError
from handler.sources import netguard
from handler.sources.netguard import is_private_ip, resolve, resolve_public, system_lookup

# First and last address of every range in the table.
PRIVATE_RANGE_EDGES = [
    ("0.0.0.0", "0.255.255.255"),
    ("10.0.0.0", "10.255.255.255"),
    ("100.64.0.0", "100.127.255.255"),
    ("127.0.0.0", "127.255.255.255"),
    ("169.254.0.0", "169.254.255.255"),
    ("172.16.0.0", "172.31.255.255"),
    ("192.0.0.0", "192.0.0.255"),
    ("192.0.2.0", "192.0.2.255"),
    ("192.31.196.0", "192.31.196.255"),
    ("192.52.193.0", "192.52.193.255"),
    ("192.88.99.0", "192.88.99.255"),
    ("192.168.0.0", "192.168.255.255"),
    ("192.175.48.0", "192.175.48.255"),
    ("198.18.0.0", "198.19.255.255"),
    ("198.51.100.0", "198.51.100.255"),
    ("203.0.113.0", "203.0.113.255"),
    ("224.0.0.0", "239.255.255.255"),
    ("240.0.0.0", "255.255.255.254"),
    ("255.255.255.255", "255.255.255.255"),
    ("::", "::"),
    ("::1", "::1"),
    ("fe80::", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ("fc00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ("ff00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ("100::", "100::ffff:ffff:ffff:ffff"),
    ("64:ff9b::", "64:ff9b::ffff:ffff"),
    ("::ffff:0:0:0", "::ffff:0:ffff:ffff"),
    ("2002::", "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ("2001::", "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ("2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
    ("2620:4f:8000::", "2620:4f:8000:ffff:ffff:ffff:ffff:ffff"),
]

# Hosts Next 16.4.6 refuses as private (as the guard sees them: literal or normalised by the
# URL parser).
VERIFIED_PRIVATE = [
    "127.0.0.1",
    "[::1]",
    "::1",
    "0x7f.1",
    "2130706433",
    "0177.0.0.1",
    "::ffff:127.0.0.1",
    "[::ffff:127.0.0.1]",
    "::ffff:7f00:1",
    "10.0.0.1",
    "169.254.169.254",
    "100.64.0.1",
    "192.0.2.1",
    "0.0.0.0",
    "fe80::1%eth0",
    "::ffff:10.0.0.1",
    "2001:2::1",  # benchmarking, inside 2001::/23
    "2001:4:112::1",  # AS112, inside 2001::/23
    "2001:20::1",  # ORCHIDv2, inside 2001::/23
]

PUBLIC = [
    "8.8.8.8",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "[2606:4700:4700::1111]",
    # neighbours just outside a private range
    "1.0.0.0",
    "9.255.255.255",
    "11.0.0.0",
    "100.63.255.255",
    "100.128.0.0",
    "126.255.255.255",
    "128.0.0.0",
    "169.253.255.255",
    "169.255.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "191.255.255.255",
    "192.0.1.0",
    "192.0.3.0",
    "192.31.195.255",
    "192.31.197.0",
    "192.52.192.255",
    "192.52.194.0",
    "192.88.98.255",
    "192.88.100.0",
    "192.167.255.255",
    "192.169.0.0",
    "192.175.47.255",
    "192.175.49.0",
    "198.17.255.255",
    "198.20.0.0",
    "198.51.99.255",
    "198.51.101.0",
    "203.0.112.255",
    "203.0.114.0",
    "223.255.255.255",
    "fe7f:ffff::",
    "fec0::1",
    "fbff:ffff::",
    "fe00::1",
    "feff::1",
    "100::1:0:0:0:0",
    "::fffe:0:0:0",
    "2001:200::",
    "2001:db7::",
    "2001:db9::",
    "2003::",
    "2620:4f:7fff::",
    "2620:4f:8001::",
]

INVALID = [
    "",
    "foo",
    "localhost",
    "1.2.3.4.5",
    "256.1.1.1",
    "127.0.0.1 x",
    "1.2.3.4/8",
    "0x1g",
    "[]",
]


@pytest.mark.parametrize("ip", [ip for edge in PRIVATE_RANGE_EDGES for ip in edge])
def test_every_range_in_the_table_is_private(ip: str) -> None:
    assert is_private_ip(ip)


@pytest.mark.parametrize("ip", VERIFIED_PRIVATE)
def test_verified_rejections(ip: str) -> None:
    assert is_private_ip(ip)


@pytest.mark.parametrize(
    "ip", ["::2", "::127.0.0.1", "::7f00:1", "::a9fe:a9fe", "64:ff9b:1::", "64:ff9b:1::a00:1"]
)
def test_embedded_ipv4_forms_next_calls_unicast_are_private_here(ip: str) -> None:
    """IPv4-compatible and local-use NAT64 addresses could reach a private IPv4 address."""
    assert is_private_ip(ip)


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses(ip: str) -> None:
    assert not is_private_ip(ip)


@pytest.mark.parametrize("ip", INVALID)
def test_invalid_addresses_are_not_private(ip: str) -> None:
    assert not is_private_ip(ip)


def test_differs_from_pythons_is_global() -> None:
    import ipaddress

    for ip in ("192.31.196.1", "192.52.193.1", "224.0.0.1"):  # AS112, AMT, multicast
        assert ipaddress.ip_address(ip).is_global and is_private_ip(ip)


def resolver_of(answer: list[str], calls: list[str]) -> netguard.Resolver:
    async def lookup(hostname: str) -> list[str]:
        calls.append(hostname)
        return answer

    return lookup


@pytest.mark.anyio
async def test_literal_ips_skip_the_resolver() -> None:
    calls: list[str] = []
    assert await resolve("8.8.8.8", resolver=resolver_of(["1.1.1.1"], calls)) == ["8.8.8.8"]
    with pytest.raises(ImageError) as caught:
        await resolve_public("::1", resolver=resolver_of(["8.8.8.8"], calls))
    assert (caught.value.status, caught.value.message) == (400, errors.URL_NOT_ALLOWED)
    assert calls == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer", [["127.0.0.1"], ["8.8.8.8", "10.0.0.1"], ["2001:4860::1", "fd00::1"]]
)
async def test_any_private_answer_is_refused(answer: list[str]) -> None:
    calls: list[str] = []
    with pytest.raises(ImageError) as caught:
        await resolve_public("img.example", resolver=resolver_of(answer, calls))
    assert (caught.value.status, caught.value.message) == (400, errors.URL_NOT_ALLOWED)
    assert not caught.value.transient
    assert calls == ["img.example"]


@pytest.mark.anyio
async def test_public_answers_are_returned_for_pinning() -> None:
    calls: list[str] = []
    answer = ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    assert await resolve_public("img.example", resolver=resolver_of(answer, calls)) == answer


@pytest.mark.anyio
async def test_an_empty_answer_is_a_dns_failure() -> None:
    with pytest.raises(ImageError) as caught:
        await resolve("img.example", resolver=resolver_of([], []))
    assert (caught.value.status, caught.value.transient) == (502, True)


@pytest.mark.anyio
async def test_system_lookup_returns_every_address_once() -> None:
    assert "127.0.0.1" in await system_lookup("localhost")
    with pytest.raises(ImageError) as caught:
        await resolve_public("localhost")
    assert caught.value.status == 400


@pytest.mark.anyio
async def test_system_lookup_failure_is_502_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(netguard.anyio, "getaddrinfo", failing)
    with pytest.raises(ImageError) as caught:
        await system_lookup("nonexistent.invalid")
    assert (caught.value.status, caught.value.message) == (502, errors.UPSTREAM_INVALID)
    assert caught.value.transient
