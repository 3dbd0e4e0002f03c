"""A real HTTP(S) server on loopback with the misbehaving routes the source tests need."""

from __future__ import annotations

import gzip
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import brotli

from handler.commands.loopback import serving

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8  # sniffing is not this module's job
IMAGE_ETAG = 'W/"800-18f"'
IMAGE_CACHE_CONTROL = "public, max-age=100"
BIG_TOTAL = 4 * 1024 * 1024
BIG_CHUNK = 16 * 1024

Route = Callable[["Handler"], None]


@dataclass
class Recorded:
    path: str  # the raw request target, query included
    headers: list[tuple[str, str]]


@dataclass
class Server:
    port: int = 0
    scheme: str = "http"
    host: str = "127.0.0.1"  # the bound address
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)
    big_aborted: threading.Event = field(default_factory=threading.Event)
    big_sent: int = 0
    sni: list[str | None] = field(default_factory=list)
    connections: int = 0  # accepted, even those that never send a request

    def url(self, path: str, host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"


class Handler(BaseHTTPRequestHandler):
    server_state: Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        state = self.server_state
        path = self.path.split("?", 1)[0]
        state.hits[path] = state.hits.get(path, 0) + 1
        state.requests.append(
            Recorded(self.path, [(k.lower(), v) for k, v in self.headers.items()])
        )
        route = state.routes.get(path) or _ROUTES.get(path)
        if route is None:
            self.reply(404, b"not found")
        else:
            route(self)

    def reply(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _image(h: Handler) -> None:
    if h.headers.get("If-None-Match") == IMAGE_ETAG:
        h.reply(304, ETag=IMAGE_ETAG, Cache_Control=IMAGE_CACHE_CONTROL)
        return
    h.reply(
        200, IMAGE, Content_Type="image/png", Cache_Control=IMAGE_CACHE_CONTROL, ETag=IMAGE_ETAG
    )


def _redirect(status: int, location: str) -> Route:
    return lambda h: h.reply(status, b"moved", Location=location)


def _redirect_to_query(h: Handler) -> None:
    h.reply(302, Location=h.path.split("?to=", 1)[1])


def _status(status: int) -> Route:
    return lambda h: h.reply(status, b"some body")


def _encoded(body: bytes, coding: str) -> Route:
    return lambda h: h.reply(200, body, Content_Encoding=coding)


def _big(h: Handler) -> None:
    """Trickles a large body and records whether the client hung up before the end."""
    h.send_response(200)
    h.send_header("Content-Length", str(BIG_TOTAL))
    h.end_headers()
    chunk = b"\0" * BIG_CHUNK
    try:
        while h.server_state.big_sent < BIG_TOTAL:
            h.wfile.write(chunk)
            h.wfile.flush()
            h.server_state.big_sent += len(chunk)
            time.sleep(0.002)
    except OSError:
        h.server_state.big_aborted.set()


def _slow_headers(h: Handler) -> None:
    time.sleep(1.5)
    h.reply(200, IMAGE)


def _slow_body(h: Handler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", str(len(IMAGE)))
    h.end_headers()
    try:
        for byte in IMAGE[:20]:
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            time.sleep(0.1)
    except OSError:
        pass


def endless(chunk: int, pause: float) -> Route:
    """A 200 of unknown length that never ends: ``chunk`` bytes every ``pause`` s until hung up."""

    def route(h: Handler) -> None:
        h.send_response(200)
        h.end_headers()  # no Content-Length: the body runs until the connection closes
        h.close_connection = True
        try:
            while True:
                h.wfile.write(b"\0" * chunk)
                time.sleep(pause)
        except OSError:
            pass

    return route


def lying_length(body: bytes, declared: int) -> Route:
    """``body`` under ``Content-Length: declared``, then the connection closes."""

    def route(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(declared))
        h.end_headers()
        h.close_connection = True
        h.wfile.write(body)

    return route


def _gzip_members() -> bytes:
    half = len(IMAGE) // 2
    return gzip.compress(IMAGE[:half]) + gzip.compress(IMAGE[half:])


def _gzip_times(data: bytes, times: int) -> bytes:
    for _ in range(times):
        data = gzip.compress(data)
    return data


_ROUTES: dict[str, Route] = {
    "/img": _image,
    "/app/img": _image,
    "/301": _redirect(301, "/img"),
    "/302": _redirect(302, "/img"),
    "/303": _redirect(303, "/img"),
    "/307": _redirect(307, "/img"),
    "/308": _redirect(308, "/img"),
    "/chain/3": _redirect(302, "/chain/2"),
    "/chain/2": _redirect(302, "/chain/1"),
    "/chain/1": _redirect(302, "/img"),
    "/loop": _redirect(302, "/loop"),
    "/redirect-to": _redirect_to_query,
    "/no-location": _status(301),
    "/bad-location": _redirect(302, "http://[::1"),
    "/204": lambda h: h.reply(204),
    "/empty": lambda h: h.reply(200, b""),
    "/big": _big,
    "/slow-headers": _slow_headers,
    "/slow-body": _slow_body,
    "/gzip": _encoded(gzip.compress(IMAGE), "gzip"),
    "/x-gzip": _encoded(gzip.compress(IMAGE), "x-gzip"),
    "/gzip-members": _encoded(_gzip_members(), "gzip"),
    "/deflate": _encoded(zlib.compress(IMAGE), "deflate"),
    "/deflate-raw": _encoded(zlib.compress(IMAGE, wbits=-15), "deflate"),
    "/br": _encoded(brotli.compress(IMAGE), "br"),
    "/gzip-br": _encoded(brotli.compress(gzip.compress(IMAGE)), "gzip, br"),
    "/unknown": _encoded(b"raw bytes", "compress-x"),
    "/gzip-unknown": _encoded(gzip.compress(IMAGE), "gzip, identity"),
    "/five": _encoded(_gzip_times(IMAGE, 5), ", ".join(["gzip"] * 5)),
    "/six": _encoded(_gzip_times(IMAGE, 6), ", ".join(["gzip"] * 6)),
    "/bomb": _encoded(gzip.compress(b"\0" * 20_000_000), "GZIP"),
    "/gzip-trailing": _encoded(gzip.compress(IMAGE) + b"trailing garbage", "gzip"),
    "/empty-gzip": _encoded(b"", "gzip"),
    "/empty-br": _encoded(b"", "br"),
    "/truncated-gzip": _encoded(gzip.compress(IMAGE)[:-20], "gzip"),
    "/corrupt-gzip": _encoded(b"\x1f\x8b not gzip at all", "gzip"),
    "/truncated-deflate": _encoded(zlib.compress(IMAGE)[:-20], "deflate"),
    "/truncated-br": _encoded(brotli.compress(IMAGE)[:-10], "br"),
    "/corrupt-br": _encoded(b"not brotli at all", "br"),
}
for _code in (300, 304, 399, 403, 404, 500, 503, 999):
    _ROUTES[f"/status/{_code}"] = _status(_code)


class _QuietServer(ThreadingHTTPServer):
    state: Server

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.state.connections += 1
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up on purpose (caps, timeouts, bad certificates)


@contextmanager
def serve(tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> Iterator[Server]:
    """Serve on ``host`` (any 127.x address is loopback too) at a free port."""
    state = Server(scheme="https" if tls else "http", host=host)
    handler = type("BoundHandler", (Handler,), {"server_state": state})
    httpd = _QuietServer((host, 0), handler)
    httpd.state = state
    httpd.block_on_close = False
    if tls is not None:
        tls.sni_callback = lambda _sock, name, _ctx: state.sni.append(name)
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    state.port = httpd.server_address[1]
    # A short poll: shutdown() waits for it, once per server and test.
    with serving(httpd, poll=0.05):
        yield state
