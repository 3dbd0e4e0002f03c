"""An HTTP/1.1 proxy on loopback in front of a real S3 server, told to pass, hang or slow requests.

It reads each request (path-style S3: ``/bucket/key``), logs it, and then, by its ``mode``:
``pass`` forwards it; ``hang`` reads everything the client sends and answers nothing (a hung
S3: the client's only way out is its own timeout); ``slow`` forwards it and holds the answer
for ``delay`` seconds (S3 alive, just late); ``refuse`` answers S3's ``503 SlowDown`` at once,
asking the server nothing, and closes the connection (S3 throttling everything). With
``bucket`` set, only that bucket's requests get the fault and the others pass, so the variants
bucket can hang while the assets bucket answers. ``requests`` is the log, in arrival order;
``hung_connections`` counts the hung connections a client still holds open, i.e. requests it
is still waiting for.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from io import BufferedReader
from typing import Literal

Mode = Literal["pass", "hang", "slow", "refuse"]
_NO_BODY = frozenset({204, 304})
_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message>"
    b"<RequestId>FAULTPROXY</RequestId></Error>"
)


@dataclass(frozen=True)
class Logged:
    """One request the proxy received, and what it did with it."""

    at: float  # time.monotonic() when its head arrived
    method: str
    path: str  # the request target: /bucket/key?query
    fault: Mode

    @property
    def bucket(self) -> str:
        return self.path.lstrip("/").split("/", 1)[0].split("?", 1)[0]


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self.mode: Mode = "pass"
        self.delay = 0.0
        self.bucket: str | None = None  # when set, only this bucket's requests get the fault
        self.connections = 0
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._hung: set[socket.socket] = set()
        self._log: list[Logged] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hung_connections(self) -> int:
        with self._lock:
            return len(self._hung)

    @property
    def requests(self) -> list[Logged]:
        with self._lock:
            return list(self._log)

    def held_by_clients(self) -> int:
        """Hung connections whose client still holds them open, without a race: a client that
        closed one has its end-of-stream already queued here (loopback), even before the
        proxy's reading thread has seen it."""
        with self._lock:
            hung = list(self._hung)
        held = 0
        for conn in hung:
            try:
                closed = conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                closed = False  # nothing queued: the client is still waiting
            except OSError:
                closed = True
            held += not closed
        return held

    def requests_to(self, bucket: str) -> list[Logged]:
        return [logged for logged in self.requests if logged.bucket == bucket]

    def release(self) -> None:
        """Close every hung connection: each client sees its connection dropped."""
        with self._lock:
            hung = list(self._hung)
        for conn in hung:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
        self.release()

    def _fault(self, path: str) -> Mode:
        mode = self.mode
        if mode == "pass" or self.bucket is None:
            return mode
        return mode if Logged(0.0, "", path, mode).bucket == self.bucket else "pass"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            reader = client.makefile("rb")
            upstream_reader: BufferedReader | None = None
            while True:
                head = _read_head(reader)
                if head is None:
                    return
                method, path = (part.decode("latin-1") for part in head.split(b" ", 2)[:2])
                fault = self._fault(path)
                with self._lock:
                    self._log.append(Logged(time.monotonic(), method, path, fault))
                if fault == "hang":
                    self._hang(client, reader)
                    return
                headers = _headers(head)
                if fault == "refuse":
                    self._refuse(client, reader, method, headers)
                    return
                if "expect" in headers:  # say 100 Continue ourselves; the upstream is not asked
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    head = _without(head, b"expect")
                body = _read_body(reader, headers)
                if upstream is None:
                    upstream = socket.create_connection(self._target)
                    upstream_reader = upstream.makefile("rb")
                assert upstream_reader is not None
                upstream.sendall(head + body)
                answer = _read_answer(upstream_reader, method == "HEAD")
                if answer is None:
                    return
                if fault == "slow":
                    time.sleep(self.delay)
                client.sendall(answer[0])
                if answer[1] or headers.get("connection", "").lower() == "close":
                    return
        except OSError:
            pass
        finally:
            for conn in (client, upstream):
                if conn is not None:
                    with suppress(OSError):
                        conn.close()

    def _refuse(
        self, client: socket.socket, reader: BufferedReader, method: str, headers: dict[str, str]
    ) -> None:
        """S3's throttling answer; a body is read first unless the client waits for 100
        Continue (then it is never sent), and the connection is closed after."""
        if "expect" not in headers:
            _read_body(reader, headers)
        body = b"" if method == "HEAD" else _SLOW_DOWN
        head = (
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        client.sendall(head.encode("latin-1") + body)

    def _hang(self, client: socket.socket, reader: BufferedReader) -> None:
        with self._lock:
            self._hung.add(client)
        try:
            while reader.read1(65536):
                pass  # read everything, answer nothing, until the client gives up
        finally:
            with self._lock:
                self._hung.discard(client)


def _read_answer(reader: BufferedReader, head_request: bool) -> tuple[bytes, bool] | None:
    """The upstream's answer to one request, interim (1xx) answers included, and whether the
    connection ends with it; None at EOF."""
    answer = b""
    while True:
        head = _read_head(reader)
        if head is None:
            return None
        status = int(head.split(b" ", 2)[1])
        headers = _headers(head)
        answer += head
        if 100 <= status < 200:
            continue
        ends = headers.get("connection", "").lower() == "close"
        if head_request or status in _NO_BODY:
            return answer, ends
        framed = "content-length" in headers or "chunked" in headers.get("transfer-encoding", "")
        return answer + _read_body(reader, headers, until_close=True), ends or not framed


def _read_head(reader: BufferedReader) -> bytes | None:
    lines = []
    while True:
        line = reader.readline(65537)
        if not line:
            return None
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def _headers(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _without(head: bytes, name: bytes) -> bytes:
    lines = head.split(b"\r\n")
    kept = [line for line in lines if not line.lower().startswith(name + b":")]
    return b"\r\n".join(kept)


def _read_body(
    reader: BufferedReader, headers: dict[str, str], *, until_close: bool = False
) -> bytes:
    """The body as it came (a chunked body stays chunked)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raw = b""
        while True:
            size_line = reader.readline(65537)
            raw += size_line
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (trailer := reader.readline(65537)) not in (b"\r\n", b"\n", b""):
                    raw += trailer
                return raw + b"\r\n"
            raw += reader.read(size + 2)
    if "content-length" in headers:
        return reader.read(int(headers["content-length"]))
    return reader.read() if until_close else b""


@contextmanager
def fault_proxy(target_port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(target_port)
    try:
        yield proxy
    finally:
        proxy.close()
