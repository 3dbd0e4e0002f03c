"""Hostile input, through the app and through the Lambda handler alike.

SSRF spellings against a canary that must never see a connection, pixel and decompression bombs,
corrupt and disguised files, misbehaving upstreams, and a fuzzed query string. Every case runs
twice, through the Starlette app (``make_app``) and through ``build_handler`` with a Function URL
event, and must get the same documented answer: never a 500, never a status outside the set below.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import anyio
import pytest
import pyvips
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from handler.commands.invoke import FakeContext, response_body, response_headers
from handler.contract import errors
from handler.contract.config import load_images_config
from handler.entry.lambda_handler import build_handler
from handler.entry.settings import Settings
from handler.request import transforms as transforms_module
from handler.sources import netguard
from kit import imagegen
from kit.imagegen import _chunk
from kit.lambda_events import function_url
from kit.support import MakeApp, Route
from kit.upstream_server import Server, endless, lying_length, serve

DOCUMENTED = {200, 304, 400, 404, 413, 502, 503, 504, 508}
WEBP = {"accept": "image/webp"}
ANY_HOST = {"remotePatterns": [{"hostname": "**"}]}  # only the private-address guard protects
INVALID = errors.UPSTREAM_INVALID
NOT_AN_IMAGE = errors.NOT_AN_IMAGE


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    seconds: float

    @property
    def error(self) -> tuple[int, str]:
        return self.status, self.body.decode(errors="replace")


class Ask(Protocol):
    def __call__(self, query: str, headers: Mapping[str, str] = WEBP) -> Answer: ...


Via = Callable[..., Ask]
"""``via(images, **settings)``: one app (or one Lambda handler) with that ``images`` config."""


@pytest.fixture(params=["app", "lambda"])
def via(request: pytest.FixtureRequest, make_app: MakeApp, public_dir: Path) -> Via:
    def build(images: Mapping[str, Any], **overrides: Any) -> Ask:
        options = {"max_attempts": 1, **overrides}  # a retry would only slow the bad cases down
        if request.param == "app":
            app = make_app(load_images_config(json.dumps(images)), **options)

            def send(
                query: str, headers: Mapping[str, str]
            ) -> tuple[int, Mapping[str, str], bytes]:
                response = app.client.get(f"/_next/image?{query}", headers=dict(headers))
                return response.status_code, response.headers, response.content

        else:
            config = json.dumps(images)
            handle = build_handler(
                Settings(public_dir=str(public_dir), images_config=config, **options)
            )

            def send(
                query: str, headers: Mapping[str, str]
            ) -> tuple[int, Mapping[str, str], bytes]:
                response = handle(function_url("GET", query, dict(headers)), FakeContext())
                return response["statusCode"], response_headers(response), response_body(response)

        def ask(query: str, headers: Mapping[str, str] = WEBP) -> Answer:
            started = time.monotonic()
            status, answer_headers, body = send(query, headers)
            assert status in DOCUMENTED, (status, body[:200])
            return Answer(status, answer_headers, body, time.monotonic() - started)

        return ask

    return build


def query(url: str, w: int = 64) -> str:
    return f"url={quote(url, safe='')}&w={w}&q=75"


def trusting(server: Server, **images: Any) -> dict[str, Any]:
    """``server`` only; it listens on loopback, so the private-address guard is off."""
    pattern = {"protocol": "http", "hostname": server.host, "port": str(server.port)}
    return {"remotePatterns": [pattern], "dangerouslyAllowLocalIP": True, **images}


@pytest.fixture
def transforms(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The transforms run (decoded, resized, encoded), whichever app or handler asked: a bomb
    that is answered without one was never decoded."""
    ran: list[object] = []
    real = transforms_module.run_transform

    def counted(plan: Any, *args: Any, **kwargs: Any) -> Any:
        ran.append(plan)
        return real(plan, *args, **kwargs)

    monkeypatch.setattr(transforms_module, "run_transform", counted)
    return ran


@pytest.fixture
def canary() -> Iterator[Server]:
    """A loopback server no hostile URL may ever connect to."""
    with serve() as server:
        yield server


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The system resolver the guard asks: two names for loopback, nothing else resolves.

    Returns the names looked up. It also keeps this suite off the real network.
    """
    looked_up: list[str] = []
    table = {"localhost": "127.0.0.1", "loopback.example": "127.0.0.1"}

    async def getaddrinfo(host: str, port: object, **kwargs: object) -> list[Any]:
        looked_up.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], 0))]

    monkeypatch.setattr(anyio, "getaddrinfo", getaddrinfo)
    return looked_up


# --- SSRF: every spelling of a private address, and every way of smuggling one in ------------


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433:{port}/a.png",  # decimal
        "http://0177.0.0.1:{port}/a.png",  # octal
        "http://0x7f.1:{port}/a.png",  # hex, short
        "http://127.1:{port}/a.png",  # short
        "http://[::1]:{port}/a.png",
        "http://[::ffff:127.0.0.1]:{port}/a.png",  # IPv4-mapped
        "http://[::ffff:7f00:1]:{port}/a.png",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fd00:ec2::254]/latest/meta-data/",  # EC2's IPv6 metadata address
        "http://0.0.0.0:{port}/a.png",
        "http://allowed.example@127.0.0.1:{port}/a.png",  # userinfo: the host is 127.0.0.1
        "http://localhost:{port}/a.png",
        "http://loopback.example:{port}/a.png",  # a public-looking name for 127.0.0.1
    ],
)
def test_private_addresses_are_not_allowed(via: Via, canary: Server, url: str) -> None:
    answer = via(ANY_HOST)(query(url.format(port=canary.port)))
    assert answer.error == (400, errors.URL_NOT_ALLOWED)
    assert canary.connections == 0


def test_userinfo_and_backslash_tricks_keep_the_parsed_host(
    via: Via, canary: Server, dns: list[str]
) -> None:
    ask = via({"remotePatterns": [{"hostname": "allowed.example"}]})
    userinfo = ask(query(f"http://allowed.example@127.0.0.1:{canary.port}/a.png"))
    assert userinfo.error == (400, errors.URL_NOT_ALLOWED)  # the host is 127.0.0.1: no pattern
    # WHATWG reads "\" as "/" in http URLs: host allowed.example, path /@127.0.0.1:port/a.png.
    backslash = ask(query(f"http://allowed.example\\@127.0.0.1:{canary.port}/a.png"))
    assert backslash.error == (502, INVALID)  # allowed.example does not resolve here
    assert dns == ["allowed.example"]
    assert canary.connections == 0


@pytest.fixture
def public_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """An allowed host that passes the guard: a loopback server whose address counts as public.

    It listens on 127.0.0.2, so the canary's 127.0.0.1 keeps its place in the private table.
    """
    real = netguard.is_private_ip
    with serve(host="127.0.0.2") as server:
        monkeypatch.setattr(netguard, "is_private_ip", lambda ip: ip != server.host and real(ip))
        yield server


def test_a_redirect_to_a_private_address_is_not_allowed(
    via: Via, canary: Server, public_host: Server
) -> None:
    public_host.routes["/a.png"] = Route(body=imagegen.png(64, 64))
    ask = via(ANY_HOST)
    assert imagegen.decode(ask(query(public_host.url("/a.png"))).body)[:3] == ("webp", 64, 64)
    for target in (
        canary.url("/a.png"),
        f"http://2130706433:{canary.port}/a.png",
        f"http://loopback.example:{canary.port}/a.png",
        f"http://[::ffff:127.0.0.1]:{canary.port}/a.png",
    ):
        answer = ask(query(public_host.url(f"/redirect-to?to={target}")))
        assert answer.error == (400, errors.URL_NOT_ALLOWED)
    assert public_host.hits["/redirect-to"] == 4
    assert canary.connections == 0


@pytest.mark.parametrize(("strict", "status"), [(False, 200), (True, 400)])
def test_strict_redirects_keep_every_hop_inside_the_patterns(
    via: Via, server: Server, canary: Server, strict: bool, status: int
) -> None:
    """Both loopback (guard off): only ``--strict-redirects`` stops an allowed host's bounce."""
    server.routes["/strict/a.png"] = canary.routes["/a.png"] = Route(body=imagegen.png(64, 64))
    ask = via(trusting(server), strict_redirects=strict)
    same_host = ask(query(server.url("/redirect-to?to=/strict/a.png")))
    assert imagegen.decode(same_host.body)[:3] == ("webp", 64, 64)
    bounce = ask(query(server.url(f"/redirect-to?to={canary.url('/a.png')}")))
    assert bounce.status == status
    if strict:
        assert bounce.error == (400, errors.URL_NOT_ALLOWED)
        assert canary.connections == 0
    else:  # Next's own behaviour: the patterns are matched on the requested URL only
        assert canary.hits == {"/a.png": 1}


# --- bombs: answered from the header, never expanded ------------------------------------------


def resized_png(width: int, height: int) -> bytes:
    """A real 16x16 PNG whose IHDR claims ``width`` x ``height``."""
    png = imagegen.png(16, 16)
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return png[:8] + ihdr + png[33:]


def resized_jpeg(width: int, height: int) -> bytes:
    """A real 16x16 baseline JPEG whose SOF0 claims ``width`` x ``height``."""
    jpeg = bytearray(imagegen.jpeg(16, 16))
    struct.pack_into(">HH", jpeg, jpeg.index(b"\xff\xc0") + 5, height, width)
    return bytes(jpeg)


def with_chunk(png: bytes, chunk: bytes) -> bytes:
    """``chunk`` inserted right after IHDR."""
    return png[:33] + chunk + png[33:]


def zlib_zeros(mib: int) -> bytes:
    """A zlib stream of ``mib`` MiB of zeros, built in milliseconds (about 1 KB per MiB).

    One full-flushed block of 1 MiB of zeros is repeated, then an empty final block and the
    Adler-32 of n zeros, which is ``(n mod 65521) << 16 | 1``.
    """
    compressor = zlib.compressobj(9)
    first = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    adler = ((mib << 20) % 65521) << 16 | 1
    return first + block * (mib - 1) + b"\x03\x00" + adler.to_bytes(4, "big")


def test_the_zlib_bomb_is_what_it_claims() -> None:
    inflater = zlib.decompressobj()
    assert len(inflater.decompress(zlib_zeros(3))) == 3 << 20 and inflater.eof


def gif(screen: tuple[int, int], frame: tuple[int, int], lzw: bytes) -> bytes:
    """A one-frame GIF: logical screen and frame sizes as given, two-colour palette."""
    header = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, *frame, 0)
    return header + descriptor + b"\x02" + bytes([len(lzw)]) + lzw + b"\0;"


BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE svg [\n<!ENTITY lol0 "lol">\n'
    + b"".join(b'<!ENTITY lol%d "%s">\n' % (i, b"&lol%d;" % (i - 1) * 10) for i in range(1, 10))
    + b']>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
    + b"<text>&lol9;</text></svg>"
)


@pytest.mark.parametrize(
    ("name", "body", "content_type"),
    [
        ("png-20000x20000", resized_png(20_000, 20_000), "image/png"),
        ("jpeg-65000x65000", resized_jpeg(65_000, 65_000), "image/jpeg"),
    ],
)
def test_too_many_pixels_are_served_as_they_are_without_decoding(
    via: Via, server: Server, name: str, body: bytes, content_type: str, transforms: list[object]
) -> None:
    """Over ``imgOptMaxInputPixels`` sharp refuses before decoding; Next serves the original."""
    server.routes[f"/{name}"] = Route(body=body)
    answer = via(trusting(server))(query(server.url(f"/{name}")))
    assert (answer.status, answer.headers["content-type"], answer.body) == (200, content_type, body)
    assert transforms == []  # decided from the header


@pytest.mark.parametrize(
    "chunk",
    [
        _chunk(b"iCCP", b"icc\0\0" + zlib_zeros(1024)),
        _chunk(b"zTXt", b"Comment\0\0" + zlib_zeros(1024)),
    ],
    ids=["iCCP", "zTXt"],
)
def test_a_png_chunk_inflating_to_a_gibibyte_is_not_inflated(
    via: Via, server: Server, chunk: bytes, transforms: list[object]
) -> None:
    """libpng caps what an ancillary chunk may inflate to: the picture is optimised as usual."""
    body = with_chunk(imagegen.png(64, 64), chunk)
    server.routes["/chunk-bomb.png"] = Route(body=body)
    answer = via(trusting(server))(query(server.url("/chunk-bomb.png")))
    assert answer.status == 200
    assert imagegen.decode(answer.body)[:3] == ("webp", 64, 64)
    assert len(transforms) == 1  # optimised as usual
    # libpng stopped at its cap: no profile and no comment came of the chunk (one of 1 MiB does).
    fields = pyvips.Image.new_from_buffer(body, "").get_fields()
    assert [f for f in fields if f.startswith(("icc-profile", "png-comment"))] == []


def test_svg_entity_expansion_is_never_expanded(
    via: Via, server: Server, transforms: list[object]
) -> None:
    server.routes["/laughs.svg"] = Route(body=BILLION_LAUGHS)
    refused = via(trusting(server))(query(server.url("/laughs.svg")))
    assert refused.error == (400, errors.TYPE_NOT_ALLOWED)
    answer = via(trusting(server, dangerouslyAllowSVG=True))(query(server.url("/laughs.svg")))
    assert (answer.status, answer.headers["content-type"]) == (200, "image/svg+xml")
    assert answer.body == BILLION_LAUGHS  # passed through untouched: nothing parsed it
    assert "sandbox" in answer.headers["content-security-policy"]
    assert transforms == []


def test_a_gif_screen_larger_than_its_frame_is_the_frame(via: Via, server: Server) -> None:
    """libnsgif ignores a logical screen over 2048 px: the canvas is the 8x8 frame."""
    body = bytearray(imagegen.gif(8, 8))
    struct.pack_into("<HH", body, 6, 16_383, 16_383)
    server.routes["/screen.gif"] = Route(body=bytes(body))
    answer = via(trusting(server))(query(server.url("/screen.gif")))
    assert imagegen.decode(answer.body)[:3] == ("webp", 8, 8)  # the canvas never 16383 px


def test_a_gif_frame_claiming_16383_squared_gets_a_clear_answer(
    via: Via, server: Server, transforms: list[object]
) -> None:
    """A 34-byte GIF whose frame claims 16383x16383: libnsgif decodes a frame whole (1 GiB).

    Before admission control the decode ran (~1 s and 1 GiB resident here, then the original
    bytes). The lead's change answers from the header: the original bytes past the GIF canvas
    limit, or 503 when the memory budget is spent. Only the status is pinned here, and that
    nothing was decoded.
    """
    body = gif((16_383, 16_383), (16_383, 16_383), lzw=b"\x2c")  # clear code, end code
    server.routes["/frame.gif"] = Route(body=body)
    answer = via(trusting(server))(query(server.url("/frame.gif")))
    assert answer.status in {200, 503}
    assert transforms == []


# --- corrupt and disguised files: Next's answers, by the bytes alone --------------------------

PNG = imagegen.png(64, 64)
SCRIPT = b"<html><script>alert(document.domain)</script></html>"
PNG_POLYGLOT = with_chunk(PNG, _chunk(b"tEXt", b"Comment\0" + SCRIPT)) + SCRIPT
GIF_POLYGLOT = b"GIF89a/*\x0a\x00\x80\x00\x00\0\0\0\xff\xff\xff*/=1;alert(document.domain);//;"
RANDOM = random.Random(0).randbytes(4096)  # first byte 0xcd: no signature, no detector match


@pytest.mark.parametrize(
    ("name", "body", "label", "expected"),
    [
        # a content type: libvips failed, so the original bytes are served under it
        ("truncated-jpeg", imagegen.truncated_jpeg(), "image/jpeg", "image/jpeg"),
        ("truncated-png", imagegen.png(256, 256)[:600], "image/png", "image/png"),
        ("gif-polyglot", GIF_POLYGLOT, "application/javascript", "image/gif"),
        # "webp": optimised, whatever the label says
        ("png-as-jpeg", PNG, "image/jpeg", "webp"),
        ("png-polyglot", PNG_POLYGLOT, "text/html", "webp"),
        # an error
        ("html", b"<!doctype html><title>x</title>" + SCRIPT, "image/png", (400, NOT_AN_IMAGE)),
        ("random", RANDOM, "image/png", (400, NOT_AN_IMAGE)),
        ("zero-bytes", b"", "image/png", (400, INVALID)),
    ],
)
def test_corrupt_and_disguised_files(
    via: Via, server: Server, name: str, body: bytes, label: str, expected: object
) -> None:
    server.routes[f"/disguised/{name}"] = Route(body=body, headers={"Content-Type": label})
    answer = via(trusting(server))(query(server.url(f"/disguised/{name}")))
    if isinstance(expected, tuple):
        assert answer.error == expected
    elif expected == "webp":
        assert imagegen.decode(answer.body)[:3] == ("webp", 64, 64)
        assert b"<script" not in answer.body  # metadata and trailing bytes are dropped
    else:
        assert (answer.status, answer.headers["content-type"], answer.body) == (200, expected, body)
        # never rendered as a document, whatever else the bytes are
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in answer.headers["content-security-policy"]


# --- misbehaving upstreams ---------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def hostile_routes(server: Server) -> None:
    png = imagegen.png(64, 64)
    server.routes["/drip"] = endless(64, 0.05)  # never ends, far under any cap
    server.routes["/flood"] = endless(64 * 1024, 0.0)
    server.routes["/short-length"] = lying_length(png, 100)
    server.routes["/long-length"] = lying_length(png, len(png) + 1000)


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/slow-headers", 504, errors.UPSTREAM_TIMEOUT),  # headers after 1.5 s
        ("/drip", 504, errors.UPSTREAM_TIMEOUT),
        ("/flood", 413, INVALID),  # past maximumResponseBody
        ("/long-length", 502, INVALID),  # the connection closes before the promised bytes
        ("/status/999", 502, INVALID),
        ("/no-location", 502, INVALID),  # a 301 without Location
        ("/corrupt-gzip", 502, INVALID),
        ("/truncated-gzip", 502, INVALID),
        ("/truncated-br", 502, INVALID),
        ("/status/304", 502, INVALID),  # we sent no If-None-Match
    ],
)
def test_misbehaving_upstreams(
    via: Via, server: Server, path: str, status: int, message: str
) -> None:
    budget = 60.0  # the request's: only a hang gets near it
    images = trusting(server, maximumResponseBody=1_000_000)
    answer = via(images, fetch_timeout=0.3, timeout=budget)(query(server.url(path)))
    assert answer.error == (status, message)
    # The hop's own timeout ends a drip that never pauses 0.3 s, long before the budget would.
    assert answer.seconds < budget / 2


def test_a_redirect_to_gopher_is_never_followed(via: Via, server: Server, canary: Server) -> None:
    target = f"gopher://127.0.0.1:{canary.port}/_SET%20key%20value"
    answer = via(trusting(server))(query(server.url(f"/redirect-to?to={target}")))
    assert answer.error == (502, INVALID)
    assert canary.connections == 0


def test_a_short_content_length_cuts_the_body(via: Via, server: Server) -> None:
    """The client reads the promised 100 bytes: a truncated PNG, served as it is."""
    answer = via(trusting(server))(query(server.url("/short-length")))
    assert (answer.status, answer.headers["content-type"]) == (200, "image/png")
    assert answer.body == imagegen.png(64, 64)[:100]


# --- fuzz: whatever the query string and headers, a documented status -------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=24)
HEADER = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
PERCENT = st.sampled_from(["%", "%2", "%zz", "%00", "%ff", "%E0%A4%A", "%C0%AF", "%252F", "%u2215"])
KEYS = st.sampled_from(["url", "w", "q", "URL", "url[]", " url", "w ", "q%00"]) | TEXT
NUMBERS = (
    st.sampled_from(["0", "-1", "1e3", "64.0", "0x40", " 64", "\uff16\uff14", "9" * 30])
    | st.integers(-(10**25), 10**25).map(str)
    | TEXT
)


def valid_or(valid: list[str], junk: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Mostly a value that passes validation, so that the fuzz gets past it too."""
    # sampled_from draws evenly; small integers would come up far more often than one in four
    return st.sampled_from([True, True, True, False]).flatmap(
        lambda ok: st.sampled_from(valid) if ok else junk
    )


def urls(server: Server) -> st.SearchStrategy[str]:
    upstream = ["/img", "/status/999", "/status/304", "/no-location", "/truncated-gzip", "/loop"]
    valid = [
        "/test.png",
        "/test.jpg",
        "/missing.png",
        *(server.url(path) for path in upstream),
        server.url("/redirect-to?to=gopher://127.0.0.1:1/"),
        server.url("/unknown"),  # not an image
    ]
    invalid = [
        "/_next/image?url=/test.png&w=64&q=75",
        "//example.com/a.png",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/\\[",
        "http://[::1]/a.png",
        "http://2130706433/a.png",
        "ftp://example.com/a.png",
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
    ]
    known = st.sampled_from(valid + invalid)
    return valid_or(valid, known | TEXT | st.tuples(known, PERCENT).map("".join))


@st.composite
def queries(draw: st.DrawFn, server: Server) -> str:
    """The three parameters (each maybe missing, repeated or junk), junk keys, encoded or not."""
    pairs = [
        ("url", draw(urls(server))),
        ("w", draw(valid_or(["64", "640", "3840"], NUMBERS))),
        ("q", draw(valid_or(["75"], NUMBERS))),
    ]
    pairs = [pair for pair in pairs if draw(st.sampled_from(range(10)))]  # one time in ten: gone
    pairs += draw(st.lists(st.tuples(KEYS, urls(server) | NUMBERS | PERCENT), max_size=2))
    pairs = draw(st.permutations(pairs))
    parts = [
        f"{quote(key)}={quote(value, safe='')}" if draw(st.booleans()) else f"{key}={value}"
        for key, value in pairs
    ]
    return "&".join(parts) + draw(valid_or([""], st.sampled_from(["&", "&&", "=", "&=x", "%"])))


ACCEPT = valid_or(
    ["image/avif,image/webp,image/apng,image/*,*/*;q=0.8", "image/webp", "*/*"],
    st.sampled_from(["image/webp;foo", "image/webp;q=", "image/webp;level=1", "text/html", ",;"])
    | HEADER,
)
HEADERS = st.fixed_dictionaries(
    {}, optional={"accept": ACCEPT, "if-none-match": st.just("*") | HEADER}
)


@pytest.fixture
def fuzzed(via: Via, server: Server) -> Ask:
    return via(trusting(server), fetch_timeout=1.0, timeout=3.0)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure here always reproduces
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one app for every example
)
@given(data=st.data())
def test_fuzzed_queries_and_headers_get_a_documented_status(
    fuzzed: Ask, server: Server, data: st.DataObject
) -> None:
    answer = fuzzed(data.draw(queries(server)), data.draw(HEADERS))
    event(f"status {answer.status}")  # the spread, with --hypothesis-show-statistics
    assert answer.status in DOCUMENTED  # ask() checks it too; no 500 can pass
