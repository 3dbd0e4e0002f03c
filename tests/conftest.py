"""Shared fixtures: a real loopback upstream server and a client for the real app."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from support import App, Clock, MakeApp, Route, Upstream

from handler.app import create_app
from handler.config import ImagesConfig, load_images_config
from handler.settings import Settings
from handler.stores.base import Store
from handler.stores.memory import MemoryStore
from handler.wiring import build_optimizer


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    state = Upstream(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            state.hits[path] = state.hits.get(path, 0) + 1
            state.requests.append({k.lower(): v for k, v in self.headers.items()})
            route = state.routes.get(path, Route(404, b"not found"))
            time.sleep(route.delay)
            etag = route.headers.get("ETag")
            if etag and self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                return
            self.send_response(route.status)
            for name, value in route.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


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
