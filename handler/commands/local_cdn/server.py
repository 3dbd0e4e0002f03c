"""The edge behind a small ASGI app, served by uvicorn on a socket bound before anything starts.

Binding first lets ``--port 0`` work and lets the startup line carry the real URL. SIGINT and
SIGTERM stop the server gracefully and ``serve`` returns, so the caller's cleanup (the Node.js
child, Lambda instances, moto) always runs; uvicorn's own re-raising of the signal afterwards
is left out for that reason. SIGHUP runs ``on_hangup`` on the serving loop (a redeploy) while
requests go on being served.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import uvicorn

from handler.commands.local_cdn.edge import Edge
from handler.commands.local_cdn.http import ViewerRequest, parse_cookies, parse_query

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class EdgeApp:
    """ASGI: one HTTP request in, ``Edge.handle``, one response out; the origins are closed at
    shutdown. WebSockets are refused: CloudFront would carry them, local-cdn does not."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await self.edge.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        client = scope.get("client") or ("127.0.0.1", 0)
        request = ViewerRequest(
            method=scope["method"],
            uri=raw_path.decode("latin-1").split("?", 1)[0],
            query=parse_query(scope["query_string"].decode("latin-1")),
            headers=[(n, v) for n, v in headers if n != "cookie"],
            cookies=parse_cookies(headers),
            body=body,
            client_ip=client[0],
            client_port=client[1],
            http_version=scope["http_version"],
            scheme=scope["scheme"],
        )
        response = await self.edge.handle(request)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (n.encode("latin-1"), v.encode("latin-1")) for n, v in response.headers
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})


class _Server(uvicorn.Server):
    """uvicorn, announcing itself once listening and returning normally after a signal."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_listening: Callable[[], None],
        on_hangup: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        super().__init__(config)
        self._on_listening = on_listening
        self._on_hangup = on_hangup
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hangups: set[asyncio.Future[object]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if self.started:
            self._on_listening()

    def _hangup(self, signum: int, frame: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._start_hangup)

    def _start_hangup(self) -> None:
        if self._on_hangup is None or self.should_exit:
            return
        work = asyncio.ensure_future(self._on_hangup())
        self._hangups.add(work)
        work.add_done_callback(self._hangups.discard)

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        original[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._hangup)
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def serve(
    app: EdgeApp,
    sock: socket.socket,
    on_listening: Callable[[], None],
    on_hangup: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM; in-flight requests get five seconds to finish. SIGHUP
    runs ``on_hangup`` (if any) alongside."""
    config = uvicorn.Config(
        app,
        lifespan="on",
        server_header=False,
        date_header=False,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
    _Server(config, on_listening, on_hangup).run(sockets=[sock])
