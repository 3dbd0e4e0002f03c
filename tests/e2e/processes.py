"""The processes of the e2e run: ``next start``, a logging proxy in front of it, ``local-cdn``.

Each is a context manager that waits (bounded) until its process answers and stops it when the
block ends, whatever happened inside: SIGTERM, a bounded wait, then SIGKILL. Processes are
signalled by their own id (``next start`` by its process group, which it leads).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness import NEXT

from handler.commands.loopback import serving
from kit.local_cdn_process import LocalCdn
from kit.local_cdn_process import local_cdn as run_local_cdn

# Never forwarded by a proxy (RFC 9110 §7.6.1); the body is re-framed with Content-Length.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, deadline: float, process: subprocess.Popen[Any] | None = None) -> None:
    """Poll ``url`` until it answers 200; fail once ``deadline`` passes or ``process`` exits."""
    parts = urlsplit(url)
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before {url} answered")
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
        try:
            connection.request("GET", parts.path or "/")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 in time")
        time.sleep(0.25)


def stop(process: subprocess.Popen[Any], *, group: bool = False, timeout: float = 20) -> int:
    """SIGTERM (to the process group it leads, with ``group``), then SIGKILL after ``timeout``."""
    if process.poll() is None:
        try:
            if group:
                os.killpg(process.pid, signal.SIGTERM)
            else:
                process.send_signal(signal.SIGTERM)
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            if group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        except ProcessLookupError:
            pass
    return process.wait(timeout=timeout)


@contextmanager
def next_start(app: Path, env: Mapping[str, str], log: Path) -> Iterator[str]:
    """``next start`` on a free loopback port; yields its base URL."""
    port = free_port()
    command = [*NEXT, "start"]
    command += ["--hostname", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=app,
            env={**os.environ, "NEXT_TELEMETRY_DISABLED": "1", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: any child goes with it
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_http(url + "/", time.monotonic() + 60, process)
            yield url
        finally:
            stop(process, group=True)


@dataclass
class Proxy:
    """What reached the app through the proxy: one request target per request."""

    url: str = ""
    targets: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def logging_proxy(upstream: str) -> Iterator[Proxy]:
    """A reverse proxy on a free port that forwards everything to ``upstream`` and records it.

    local-cdn's ``--app-origin`` points here, so ``targets`` is every request CloudFront (and
    the function's origin fallback) sent to the app.
    """
    host, _, port = upstream.removeprefix("http://").partition(":")
    proxy = Proxy()

    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self) -> None:
            with proxy.lock:
                proxy.targets.append(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            connection = http.client.HTTPConnection(host, int(port), timeout=60)
            try:
                connection.putrequest(
                    self.command, self.path, skip_host=True, skip_accept_encoding=True
                )
                for name, value in self.headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        connection.putheader(name, value)
                if body is not None:
                    connection.putheader("Content-Length", str(len(body)))
                connection.endheaders(body)
                response = connection.getresponse()
                data = response.read()
            finally:
                connection.close()
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = forward

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Forward)) as proxy.url:
        yield proxy


@contextmanager
def local_cdn(template: Path, app_origin: str, seed: Path, log: Path) -> Iterator[LocalCdn]:
    """``next-image local-cdn --moto --seed-public`` on a free port; its output kept in ``log``."""
    args = ("--template", str(template), "--app-origin", app_origin, "--seed-public", str(seed))
    with run_local_cdn(*args, start_timeout=120) as running:
        try:
            yield running
        finally:
            log.write_text("".join(running.output))
