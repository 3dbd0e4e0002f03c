"""Shared fixtures (a real loopback upstream server, a client for the real app, moto's S3 and
redis-server), and each test's tier marker, read from its folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from devtools.redis_server import start_redis, stop_redis
from handler.contract.config import ImagesConfig, load_images_config
from handler.entry.settings import Settings
from handler.entry.wiring import build_coordinator
from handler.http.app import create_app
from handler.stores.base import Store
from handler.stores.memory import MemoryStore
from kit.support import App, Clock, MakeApp, Upstream
from kit.upstream_server import serve

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "contract", "app", "system", "e2e")


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks each test with its tier, the first folder under ``tests/``: ``pytest -m unit``."""
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0]
        if folder in TIERS:
            item.add_marker(getattr(pytest.mark, folder))


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
    from kit import imagegen

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
        coordinator = build_coordinator(
            Settings(public_dir=str(public_dir), **settings),
            config=config or load_images_config(None),
            store=store,
            revalidation=revalidation,  # type: ignore[arg-type]
            clock=clock,
        )
        client = TestClient(create_app(coordinator))
        client.__enter__()
        clients.append(client)
        return App(client, coordinator, store, clock)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """moto's S3 server on loopback, boto3 pointed at it: S3 over real HTTP, as workers and
    Lambda handlers reach it."""
    from moto.server import ThreadedMotoServer

    from kit.support import free_port, s3_at

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    with s3_at(url):
        yield url
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Callable[..., AbstractContextManager[str]]:
    """Runs real ``redis-server`` processes: ``with redis_server(*flags) as url:``, stopped on exit.

    Each listens on a free loopback port, persists nothing, and is answering when the block
    starts. Without ``redis-server`` on PATH its tests are skipped, but fail under ``CI``: there
    the Makefile has installed it, and a skip would hide a broken install.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not on PATH (apt-get install -y redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)

    @contextmanager
    def run(*flags: str) -> Iterator[str]:
        with tempfile.TemporaryDirectory(prefix="redis-") as folder:
            try:
                server = start_redis(binary, Path(folder), *flags)
            except RuntimeError as exc:
                pytest.fail(str(exc))
            try:
                yield server.url
            finally:
                stop_redis(server)

    return run


@pytest.fixture(scope="session")
def redis_url(redis_server: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    """One redis-server for the whole session; tests keep apart by key prefix."""
    with redis_server() as url:
        yield url
