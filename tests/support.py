"""Test helpers shared by several test files (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.testclient import TestClient

from handler.optimizer import Optimizer
from handler.stores.base import Store


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering


@dataclass
class Upstream:
    """A real HTTP server on 127.0.0.1 whose routes a test sets and whose hits it counts."""

    port: int
    routes: dict[str, Route] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


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
