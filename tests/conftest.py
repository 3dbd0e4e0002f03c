"""Shared fixtures: a real loopback upstream server and a client for the real app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from support import App, Clock, MakeApp, Upstream
from upstream_server import serve

from handler.app import create_app
from handler.config import ImagesConfig, load_images_config
from handler.settings import Settings
from handler.stores.base import Store
from handler.stores.memory import MemoryStore
from handler.wiring import build_optimizer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server() -> Iterator[Upstream]:
    """One loopback server with the stock routes of ``upstream_server``, for a module's tests."""
    with serve() as state:
        yield state


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    """A real HTTP server on 127.0.0.1 whose routes a test sets and whose hits it counts."""
    with serve() as server:
        yield server


@pytest.fixture
def public_dir(tmp_path: Path) -> Path:
    import imagegen

    root = tmp_path / "public"
    root.mkdir()
    (root / "test.png").write_bytes(imagegen.png(800, 600))
    (root / "test.jpg").write_bytes(imagegen.jpeg(800, 600))
    return root


@pytest.fixture
def make_app(public_dir: Path) -> Iterator[MakeApp]:
    clients: list[TestClient] = []

    def make(
        config: ImagesConfig | None = None,
        store: Store | None = None,
        revalidation: str = "background",
        **settings: Any,
    ) -> App:
        clock = Clock()
        store = store or MemoryStore()
        optimizer = build_optimizer(
            Settings(public_dir=str(public_dir), **settings),
            config=config or load_images_config(None),
            store=store,
            revalidation=revalidation,  # type: ignore[arg-type]
            clock=clock,
        )
        client = TestClient(create_app(optimizer))
        client.__enter__()
        clients.append(client)
        return App(client, optimizer, store, clock)

    yield make
    for client in clients:
        client.__exit__(None, None, None)
