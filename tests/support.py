"""Test helpers shared by several test files (fixtures live in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.testclient import TestClient
from upstream_server import Handler
from upstream_server import Server as Upstream

from handler.optimizer import Optimizer
from handler.stores.base import Store


@dataclass
class Route:
    """A fixed answer for one path of the loopback upstream (``upstream_server``)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering

    def __call__(self, handler: Handler) -> None:
        time.sleep(self.delay)
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
    optimizer: Optimizer
    store: Store
    clock: Clock

    def get(self, query: str, accept: str | None = "image/webp", **headers: str) -> Any:
        if accept is not None:
            headers["accept"] = accept
        return self.client.get(f"/_next/image?{query}", headers=headers)

    def drain(self) -> None:
        self.client.portal.call(self.optimizer.drain)  # type: ignore[union-attr]


MakeApp = Callable[..., App]
