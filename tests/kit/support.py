"""Test helpers shared by several test files (fixtures live in conftest.py)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient

from handler.request.coordinator import Coordinator
from handler.stores.base import Store
from handler.stores.s3_client import reset_s3_client
from kit.upstream_server import Handler
from kit.upstream_server import Server as Upstream

# How long a test waits for a condition: only a hang gets there, however loaded the machine.
HANG_SECONDS = 60.0


def wait_for(condition: Callable[[], object], what: str, seconds: float = HANG_SECONDS) -> None:
    """Poll ``condition`` until it holds; fail after ``seconds``, which only a hang reaches."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {seconds} s: {what}"
        time.sleep(0.01)


async def wait_until(condition: Callable[[], object], seconds: float = HANG_SECONDS) -> None:
    """``wait_for`` on an event loop: the other tasks run while it polls."""
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.005)


def counting_threads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The calls ``anyio.to_thread.run_sync`` is given from now on."""
    threads: list[Any] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(*args: Any, **kwargs: Any) -> Any:
        threads.append(args[0])
        return await run_sync(*args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    return threads


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def s3_at(url: str) -> Iterator[None]:
    """Point boto3 (and a fresh shared client) at ``url``, with test credentials, for a block."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        env.setenv("AWS_ENDPOINT_URL", url)  # boto3 picks it up itself
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.setenv(name, "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        reset_s3_client()
        try:
            yield
        finally:
            reset_s3_client()


@dataclass
class Route:
    """A fixed answer for one path of the loopback upstream (``upstream_server``)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    gate: threading.Event | None = None  # if given, no answer until it is set

    def __call__(self, handler: Handler) -> None:
        time.sleep(self.delay)
        if self.gate is not None:
            self.gate.wait()
        etag = self.headers.get("ETag")
        if etag and handler.headers.get("If-None-Match") == etag:
            handler.send_response(304)
            for name, value in self.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            return
        handler.send_response(self.status)
        for name, value in self.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(self.body)))
        handler.end_headers()
        handler.wfile.write(self.body)


def request_headers(upstream: Upstream) -> list[dict[str, str]]:
    """The headers of every request the upstream received, in order."""
    return [dict(recorded.headers) for recorded in upstream.requests]


class Clock:
    """A settable clock, so expiry is tested without sleeping."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class App:
    client: TestClient
    coordinator: Coordinator
    store: Store
    clock: Clock

    def get(self, query: str, accept: str | None = "image/webp", **headers: str) -> Any:
        if accept is not None:
            headers["accept"] = accept
        return self.client.get(f"/_next/image?{query}", headers=headers)

    def drain(self) -> None:
        self.client.portal.call(self.coordinator.drain)  # type: ignore[union-attr]


MakeApp = Callable[..., App]
