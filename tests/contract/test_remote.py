"""RemoteSource against a real loopback server: Next's ``fetchExternalImage``.

Next's code: ``fetchExternalImage`` in ``packages/next/src/server/image-optimizer.ts``.
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
from collections.abc import Iterator

import anyio
import pytest

from handler.contract import errors
from handler.contract.config import ImagesConfig, load_images_config
from handler.contract.errors import ImageError
from handler.sources import http_fetch, netguard
from handler.sources.remote import RemoteSource
from handler.sources.retry import RetryingSource
from kit.support import HANG_SECONDS, free_port
from kit.upstream_server import (
    BIG_TOTAL,
    IMAGE,
    IMAGE_CACHE_CONTROL,
    IMAGE_ETAG,
    Handler,
    Server,
    endless,
    serve,
)

pytestmark = pytest.mark.anyio

LOCAL = ImagesConfig(dangerously_allow_local_ip=True)
GUARDED = ImagesConfig()
ANY_HOST = load_images_config(json.dumps({"remotePatterns": [{"hostname": "**"}]}))


def remote(
    config: ImagesConfig = LOCAL,
    *,
    timeout: float = 7.0,
    resolver: netguard.Resolver = netguard.system_lookup,
    strict_redirects: bool = False,
) -> RemoteSource:
    return RemoteSource(
        config, timeout=timeout, resolver=resolver, strict_redirects=strict_redirects
    )


async def expect_error(
    source: RemoteSource | RetryingSource, url: str, status: int, message: str
) -> ImageError:
    with pytest.raises(ImageError) as caught:
        await source.fetch(url)
    assert (caught.value.status, caught.value.message) == (status, message)
    return caught.value


async def test_image_with_upstream_headers(server: Server) -> None:
    upstream = await remote().fetch(server.url("/img"))
    assert upstream.body == IMAGE
    assert upstream.cache_control == IMAGE_CACHE_CONTROL
    assert upstream.etag == IMAGE_ETAG  # raw header; the caller base64url-encodes it
    assert not upstream.not_modified


async def test_only_nexts_fixed_request_headers_are_sent(server: Server) -> None:
    await remote().fetch(server.url("/img?client=1"))
    (request,) = [r for r in server.requests if r.path == "/img?client=1"]
    assert sorted(request.headers) == sorted(
        [
            ("host", f"127.0.0.1:{server.port}"),
            ("accept", "*/*"),
            ("accept-language", "*"),
            ("sec-fetch-mode", "cors"),
            ("user-agent", "node"),
            ("accept-encoding", "gzip, deflate"),
        ]
    )


async def test_proxy_environment_is_ignored(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    assert (await remote().fetch(server.url("/img"))).body == IMAGE


async def test_conditional_fetch_returns_not_modified(server: Server) -> None:
    upstream = await remote().fetch(server.url("/img"), if_none_match=IMAGE_ETAG)
    assert upstream.not_modified
    assert upstream.body == b""
    assert (upstream.etag, upstream.cache_control) == (IMAGE_ETAG, IMAGE_CACHE_CONTROL)
    assert server.requests[-1].headers[-1] == ("if-none-match", IMAGE_ETAG)
    changed = await remote().fetch(server.url("/img"), if_none_match='W/"old"')
    assert changed.body == IMAGE and not changed.not_modified


@pytest.mark.parametrize("path", ["/301", "/302", "/303", "/307", "/308", "/chain/3"])
async def test_redirects_are_followed(server: Server, path: str) -> None:
    assert (await remote().fetch(server.url(path))).body == IMAGE


async def test_redirect_loop_is_508(server: Server) -> None:
    before = server.hits.get("/loop", 0)
    await expect_error(remote(), server.url("/loop"), 508, errors.UPSTREAM_INVALID)
    assert server.hits["/loop"] - before == 4  # the request plus maximumRedirects (3) hops


async def test_maximum_redirects_counts_hops(server: Server) -> None:
    three = ImagesConfig(dangerously_allow_local_ip=True, maximum_redirects=2)
    await expect_error(remote(three), server.url("/chain/3"), 508, errors.UPSTREAM_INVALID)
    zero = ImagesConfig(dangerously_allow_local_ip=True, maximum_redirects=0)
    await expect_error(remote(zero), server.url("/301"), 508, errors.UPSTREAM_INVALID)


async def test_redirect_without_usable_location_is_502(server: Server) -> None:
    await expect_error(remote(), server.url("/no-location"), 502, errors.UPSTREAM_INVALID)
    await expect_error(remote(), server.url("/bad-location"), 502, errors.UPSTREAM_INVALID)


@pytest.mark.parametrize(
    "target",
    [
        "ftp://example.com/a.png",
        "gopher://127.0.0.1:70/_GET",
        "file:///etc/passwd",
        "data:image/png;base64,iVBORw0KGgo=",
    ],
)
async def test_redirect_to_another_protocol_is_502(server: Server, target: str) -> None:
    """Next answers 500; the fault is the upstream's, and the hop is never attempted."""
    error = await expect_error(
        remote(), server.url(f"/redirect-to?to={target}"), 502, errors.UPSTREAM_INVALID
    )
    assert not error.transient


@pytest.mark.parametrize(
    ("code", "status", "transient"),
    [
        (404, 404, False),
        (403, 403, False),
        (500, 502, True),  # Next passes a 5xx on; a 500 is kept for our own bugs
        (503, 502, True),
        (399, 502, False),
        (300, 502, False),
        (304, 502, False),  # not asked for: we sent no If-None-Match
        (999, 502, False),  # LinkedIn's answer to bots; retrying cannot help
    ],
)
async def test_upstream_statuses(server: Server, code: int, status: int, transient: bool) -> None:
    error = await expect_error(
        remote(), server.url(f"/status/{code}"), status, errors.UPSTREAM_INVALID
    )
    assert error.transient is transient


@pytest.mark.parametrize("path", ["/empty", "/204", "/empty-gzip", "/empty-br"])
async def test_empty_body_is_400(server: Server, path: str) -> None:
    await expect_error(remote(), server.url(path), 400, errors.UPSTREAM_INVALID)


async def test_oversize_body_is_413_and_the_download_stops(server: Server) -> None:
    config = ImagesConfig(dangerously_allow_local_ip=True, maximum_response_body=100_000)
    server.big_aborted.clear()
    server.big_sent = 0
    await expect_error(remote(config), server.url("/big"), 413, errors.UPSTREAM_INVALID)
    assert await anyio.to_thread.run_sync(server.big_aborted.wait, HANG_SECONDS)
    assert server.big_sent < BIG_TOTAL // 2  # it hung up, long before the end


async def test_body_exactly_at_the_cap_is_allowed(server: Server) -> None:
    config = ImagesConfig(dangerously_allow_local_ip=True, maximum_response_body=len(IMAGE))
    assert (await remote(config).fetch(server.url("/img"))).body == IMAGE
    smaller = ImagesConfig(dangerously_allow_local_ip=True, maximum_response_body=len(IMAGE) - 1)
    await expect_error(remote(smaller), server.url("/img"), 413, errors.UPSTREAM_INVALID)


@pytest.mark.parametrize(
    "path",
    [
        "/gzip",
        "/x-gzip",
        "/gzip-members",
        "/gzip-trailing",
        "/deflate",
        "/deflate-raw",
        "/br",
        "/gzip-br",
        "/five",
    ],
)
async def test_content_encodings_are_decoded(server: Server, path: str) -> None:
    assert (await remote().fetch(server.url(path))).body == IMAGE


async def test_unknown_coding_passes_the_body_raw(server: Server) -> None:
    assert (await remote().fetch(server.url("/unknown"))).body == b"raw bytes"
    raw = await remote().fetch(server.url("/gzip-unknown"))
    assert raw.body[:2] == b"\x1f\x8b"  # one unknown coding in the list: nothing is decoded


async def test_more_than_five_codings_is_400(server: Server) -> None:
    await expect_error(remote(), server.url("/six"), 400, errors.UPSTREAM_INVALID)


async def test_the_cap_counts_decoded_bytes(server: Server) -> None:
    config = ImagesConfig(dangerously_allow_local_ip=True, maximum_response_body=1_000_000)
    await expect_error(remote(config), server.url("/bomb"), 413, errors.UPSTREAM_INVALID)


@pytest.mark.parametrize(
    "path",
    ["/truncated-gzip", "/corrupt-gzip", "/truncated-deflate", "/truncated-br", "/corrupt-br"],
)
async def test_corrupt_encoding_is_502(server: Server, path: str) -> None:
    error = await expect_error(remote(), server.url(path), 502, errors.UPSTREAM_INVALID)
    assert not error.transient


@pytest.mark.parametrize("path", ["/slow-headers", "/slow-body", "/drip-forever"])
async def test_timeout_covers_headers_and_body(server: Server, path: str) -> None:
    """The timeout is the whole fetch's: a body that never pauses for 0.3 s and never ends is cut
    too (a timeout per read never would: only a hang reaches HANG_SECONDS)."""
    server.routes["/drip-forever"] = endless(1, 0.1)
    with anyio.fail_after(HANG_SECONDS):
        error = await expect_error(
            remote(timeout=0.3), server.url(path), 504, errors.UPSTREAM_TIMEOUT
        )
    assert error.transient


# --- private-IP guard (Next's ``isPrivateIp``, packages/next/src/server/is-private-ip.ts) ------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/img",
        "http://localhost:{port}/img",
        "http://[::1]:{port}/img",
        "http://0x7f.1:{port}/img",
        "http://2130706433:{port}/img",
        "http://[::ffff:127.0.0.1]:{port}/img",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/",
        "http://0.0.0.0:{port}/img",
    ],
)
async def test_private_addresses_are_not_allowed(server: Server, url: str) -> None:
    before = len(server.requests)
    error = await expect_error(
        remote(GUARDED), url.format(port=server.port), 400, errors.URL_NOT_ALLOWED
    )
    assert not error.transient
    assert len(server.requests) == before


def fixed_resolver(*answers: list[str]) -> tuple[netguard.Resolver, list[str]]:
    """A resolver giving ``answers`` in turn (the last one repeats), recording each lookup."""
    calls: list[str] = []

    async def resolve(hostname: str) -> list[str]:
        calls.append(hostname)
        return answers[min(len(calls), len(answers)) - 1]

    return resolve, calls


@pytest.mark.parametrize("answer", [["127.0.0.1"], ["93.184.215.14", "10.1.2.3"]])
async def test_a_hostname_resolving_to_any_private_address_is_not_allowed(
    server: Server, answer: list[str]
) -> None:
    resolver, calls = fixed_resolver(answer)
    url = server.url("/img", host="images.example.com")
    await expect_error(remote(GUARDED, resolver=resolver), url, 400, errors.URL_NOT_ALLOWED)
    assert calls == ["images.example.com"]


@pytest.fixture
def loopback_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the guard treat 127.0.0.1 (our server) as public; everything else keeps the table."""
    real = netguard.is_private_ip
    monkeypatch.setattr(netguard, "is_private_ip", lambda ip: ip != "127.0.0.1" and real(ip))


@pytest.mark.usefixtures("loopback_is_public")
@pytest.mark.parametrize(("config", "strict"), [(GUARDED, False), (ANY_HOST, True)])
async def test_every_redirect_hop_is_checked(
    server: Server, config: ImagesConfig, strict: bool
) -> None:
    """Strict redirects add the pattern check; the private-address guard still applies."""
    source = remote(config, strict_redirects=strict)
    assert (await source.fetch(server.url("/302"))).body == IMAGE  # a guarded fetch works
    for target in (f"http://127.0.0.2:{server.port}/img", "http://169.254.169.254/latest"):
        url = server.url(f"/redirect-to?to={target}")
        await expect_error(source, url, 400, errors.URL_NOT_ALLOWED)


@pytest.mark.usefixtures("loopback_is_public")
async def test_connection_is_pinned_to_the_checked_address(server: Server) -> None:
    # A rebinding DNS: public (here: our server) when checked, private on any later lookup.
    resolver, calls = fixed_resolver(["127.0.0.1"], ["10.0.0.1"])
    source = remote(GUARDED, resolver=resolver)
    upstream = await source.fetch(server.url("/img", host="rebind.example"))
    assert upstream.body == IMAGE
    assert calls == ["rebind.example"]  # resolved once; the socket went to the checked address
    assert ("host", f"rebind.example:{server.port}") in server.requests[-1].headers


async def test_each_hop_resolves_once_even_without_the_guard(server: Server) -> None:
    resolver, calls = fixed_resolver(["127.0.0.1"])
    source = remote(LOCAL, resolver=resolver)
    assert (await source.fetch(server.url("/chain/3", host="cdn.example"))).body == IMAGE
    assert calls == ["cdn.example"] * 4


async def test_next_address_is_tried_when_one_refuses(server: Server) -> None:
    resolver, _ = fixed_resolver(["127.0.0.3", "127.0.0.1"])
    upstream = await remote(LOCAL, resolver=resolver).fetch(
        f"http://multi.example:{server.port}/img"
    )
    assert upstream.body == IMAGE


async def test_connection_refused_is_502_transient() -> None:
    url = f"http://127.0.0.1:{free_port()}/img"
    error = await expect_error(remote(), url, 502, errors.UPSTREAM_INVALID)
    assert error.transient


async def test_dns_failure_is_502_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_such_host(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(netguard.anyio, "getaddrinfo", no_such_host)
    for config in (GUARDED, LOCAL):
        error = await expect_error(
            remote(config), "http://nonexistent.invalid/a.png", 502, errors.UPSTREAM_INVALID
        )
        assert error.transient


# --- strict redirects: every hop must match remotePatterns/domains too ----------------------


def allowing(*servers: Server) -> ImagesConfig:
    """Loopback (so ``dangerouslyAllowLocalIP``) with a pattern for each server's port only."""
    patterns = [{"protocol": "http", "hostname": "127.0.0.1", "port": str(s.port)} for s in servers]
    images = {"remotePatterns": patterns, "dangerouslyAllowLocalIP": True}
    return load_images_config(json.dumps(images))


async def test_strict_redirects_refuse_a_hop_outside_the_patterns(
    server: Server, upstream: Server
) -> None:
    url = server.url(f"/redirect-to?to={upstream.url('/img')}")
    # Next matches the patterns on the requested URL only: the other port is fetched.
    assert (await remote(allowing(server)).fetch(url)).body == IMAGE
    assert upstream.hits == {"/img": 1}
    strict = remote(allowing(server), strict_redirects=True)
    error = await expect_error(strict, url, 400, errors.URL_NOT_ALLOWED)
    assert not error.transient
    assert upstream.hits == {"/img": 1}  # the refused hop never connected


async def test_strict_redirects_follow_allowed_hops(server: Server, upstream: Server) -> None:
    strict = remote(allowing(server, upstream), strict_redirects=True)
    assert (await strict.fetch(server.url("/chain/3"))).body == IMAGE
    url = server.url(f"/redirect-to?to={upstream.url('/img')}")
    assert (await strict.fetch(url)).body == IMAGE
    domains = load_images_config('{"domains": ["127.0.0.1"], "dangerouslyAllowLocalIP": true}')
    assert (await remote(domains, strict_redirects=True).fetch(url)).body == IMAGE  # any port
    assert upstream.hits == {"/img": 2}


# --- retries ----------------------------------------------------------------------------------


async def test_transient_failures_are_retried(server: Server) -> None:
    attempts = {"n": 0}

    def flaky(h: Handler) -> None:
        attempts["n"] += 1
        if attempts["n"] <= 2:
            h.reply(503, b"busy")
        else:
            h.reply(200, IMAGE)

    server.routes["/flaky"] = flaky
    source = RetryingSource(remote(), max_attempts=3, base_delay=0.01)
    assert (await source.fetch(server.url("/flaky"))).body == IMAGE
    assert attempts["n"] == 3


async def test_retries_give_up_after_max_attempts(server: Server) -> None:
    before = server.hits.get("/status/503", 0)
    source = RetryingSource(remote(), max_attempts=2, base_delay=0.01)
    await expect_error(source, server.url("/status/503"), 502, errors.UPSTREAM_INVALID)
    assert server.hits["/status/503"] - before == 2


@pytest.mark.parametrize(
    "path", ["/status/404", "/status/403", "/status/999", "/six", "/loop", "/truncated-gzip"]
)
async def test_non_transient_failures_are_never_retried(server: Server, path: str) -> None:
    before = server.hits.get(path, 0)
    source = RetryingSource(remote(), max_attempts=3, base_delay=0.01)
    with pytest.raises(ImageError):
        await source.fetch(server.url(path))
    assert server.hits[path] - before == (4 if path == "/loop" else 1)


# --- TLS: the pinned connection still verifies the hostname ---------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context with a cert for ``img.example``, client context trusting only its CA)."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    now = datetime.datetime.now(datetime.UTC)
    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Test CA")])

    def certificate(
        subject: x509.Name, key: ec.EllipticCurvePrivateKey, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            san = x509.SubjectAlternativeName([x509.DNSName("img.example")])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    ca_cert = certificate(ca_name, ca_key, ca=True)
    leaf_cert = certificate(x509.Name([]), leaf_key, ca=False)
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(leaf_cert.public_bytes(pem))
    (folder / "key.pem").write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    client_ctx = ssl.create_default_context(cadata=ca_cert.public_bytes(pem).decode())
    return server_ctx, client_ctx


@pytest.fixture
def tls_server(
    tls: tuple[ssl.SSLContext, ssl.SSLContext], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Server]:
    server_ctx, client_ctx = tls
    monkeypatch.setattr(http_fetch, "_ssl_context", lambda: client_ctx)
    with serve(server_ctx) as state:
        yield state


async def test_tls_verifies_the_hostname_over_the_pinned_address(tls_server: Server) -> None:
    resolver, _ = fixed_resolver(["127.0.0.1"])
    source = remote(LOCAL, resolver=resolver)
    upstream = await source.fetch(tls_server.url("/img", host="img.example"))
    assert upstream.body == IMAGE
    assert tls_server.sni[-1] == "img.example"
    headers = dict(tls_server.requests[-1].headers)
    assert headers["host"] == f"img.example:{tls_server.port}"
    assert headers["accept-encoding"] == "br, gzip, deflate"


async def test_tls_certificate_for_another_name_is_rejected(tls_server: Server) -> None:
    resolver, _ = fixed_resolver(["127.0.0.1"])
    source = RetryingSource(remote(LOCAL, resolver=resolver), base_delay=0.01)
    error = await expect_error(
        source, tls_server.url("/img", host="other.example"), 502, errors.UPSTREAM_INVALID
    )
    assert not error.transient
    assert tls_server.requests == []
