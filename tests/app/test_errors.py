"""Every error carries a category: in the request's log record and in the errors counter.

One case of each kind, through the app, with Next's status and message unchanged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
from starlette.requests import Request
from starlette.testclient import TestClient

from handler.contract import errors
from handler.contract.config import ImagesConfig
from handler.contract.errors import Category
from handler.entry.settings import Settings
from handler.entry.wiring import build_coordinator
from handler.http.app import OVERSIZE_UNSTORED, Oversize, create_app
from handler.http.metrics import ERRORS, PrometheusMetrics
from handler.model import RequestRecord, Variant
from handler.request.coordinator import Coordinator
from handler.stores.memory import MemoryStore
from kit.prometheus import parse
from kit.support import Route, Upstream

LOCAL = ImagesConfig(dangerously_allow_local_ip=True, domains=("127.0.0.1",))


@dataclass
class Recorder:
    """An observer that keeps every request's record."""

    records: list[RequestRecord] = field(default_factory=list)

    def __call__(self, request: Request, record: RequestRecord) -> None:
        self.records.append(record)


@dataclass
class Service:
    client: httpx.AsyncClient
    coordinator: Coordinator
    metrics: PrometheusMetrics
    recorder: Recorder

    async def get(self, query: str) -> httpx.Response:
        return await self.client.get(f"/_next/image?{query}", headers={"accept": "image/webp"})

    def errors_by_category(self) -> dict[str, float]:
        return {
            dict(labels)["category"]: value
            for (name, labels), value in parse(self.metrics.render().decode()).items()
            if name == ERRORS.name
        }


class UnwritableStore(MemoryStore):
    """A store whose variant writes fail, so an oversize variant is never confirmed."""

    def put_variant(self, key: str, variant: Variant) -> None:
        raise OSError("disk full")


class DownStore(UnwritableStore):
    """A store that is down: every call fails."""

    def get_pointer(self, key: str) -> None:
        raise OSError("connection refused")

    get_variant = get_source = get_pointer

    def put_pointer(self, *args: object) -> None:
        raise OSError("connection refused")

    put_source = put_pointer


@asynccontextmanager
async def service(
    public_dir: Path,
    config: ImagesConfig | None = None,
    store: MemoryStore | None = None,
    oversize: Oversize | None = None,
    **settings: Any,
) -> AsyncIterator[Service]:
    coordinator = build_coordinator(
        Settings(public_dir=str(public_dir), **settings),
        config=config or ImagesConfig(),
        store=store or MemoryStore(),
    )
    recorder = Recorder()
    metrics = PrometheusMetrics(coordinator, also=recorder)
    app = create_app(coordinator, observer=metrics, oversize=oversize)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as c:
        try:
            yield Service(c, coordinator, metrics, recorder)
        finally:
            metrics.close()


async def assert_error(
    app: Service, query: str, status: int, message: str, category: Category, error: str = ""
) -> None:
    """The answer is Next's, the record and the counter say ``category``, and only that.

    The record's ``error`` is the message, unless the app names the error otherwise (``error``).
    A transient error (5xx) is never cached; a 4xx has Next's bare headers.
    """
    response = await app.get(query)
    assert (response.status_code, response.text) == (status, message)
    assert response.headers.get("cache-control") == ("no-store" if status >= 500 else None)
    record = app.recorder.records[-1]
    assert (record["error"], record["error_category"]) == (error or message, category)
    assert app.errors_by_category() == {category: 1}


@pytest.mark.anyio
async def test_a_bad_w_is_validation(public_dir: Path) -> None:
    async with service(public_dir) as app:
        await assert_error(app, "url=/test.jpg&w=abc&q=75", 400, errors.W_INVALID, "validation")


@pytest.mark.anyio
async def test_a_blocked_private_address_is_upstream_not_validation(public_dir: Path) -> None:
    """The same 400 and message as a URL outside the patterns, but the URL itself passed."""
    config = ImagesConfig(domains=("127.0.0.1",))
    async with service(public_dir, config) as app:
        query = f"url={quote('http://127.0.0.1/a.png', safe='')}&w=640&q=75"
        await assert_error(app, query, 400, errors.URL_NOT_ALLOWED, "upstream")


@pytest.mark.anyio
async def test_an_upstream_5xx_is_upstream(public_dir: Path, upstream: Upstream) -> None:
    upstream.routes["/down"] = Route(status=500)
    async with service(public_dir, LOCAL) as app:
        query = f"url={quote(upstream.url('/down'), safe='')}&w=640&q=75"
        await assert_error(app, query, 502, errors.UPSTREAM_INVALID, "upstream")


@pytest.mark.anyio
async def test_the_time_budget_is_timeout(public_dir: Path, upstream: Upstream) -> None:
    never = threading.Event()  # the upstream answers once the test is over
    upstream.routes["/slow"] = Route(body=b"late", gate=never)
    try:
        async with service(public_dir, LOCAL, timeout=0.3) as app:
            query = f"url={quote(upstream.url('/slow'), safe='')}&w=640&q=75"
            await assert_error(app, query, 504, errors.TIME_BUDGET_EXCEEDED, "timeout")
    finally:
        never.set()


@pytest.mark.anyio
async def test_a_full_queue_is_overload(public_dir: Path) -> None:
    async with service(public_dir, max_transforms=1, max_queue=0) as app:
        admission = app.coordinator.admission
        async with admission.slot(0, deadline=anyio.current_time() + 60):
            await assert_error(app, "url=/test.jpg&w=640&q=75", 503, errors.OVERLOADED, "overload")


@pytest.mark.anyio
async def test_bytes_that_are_not_an_image_are_pipeline(public_dir: Path) -> None:
    (public_dir / "page.jpg").write_text("<html>not an image</html>")
    async with service(public_dir) as app:
        await assert_error(app, "url=/page.jpg&w=640&q=75", 400, errors.NOT_AN_IMAGE, "pipeline")


@pytest.mark.anyio
async def test_an_oversize_variant_not_stored_is_store(public_dir: Path) -> None:
    oversize = Oversize(limit=100, location_prefix="https://cdn.example/")
    async with service(public_dir, store=UnwritableStore(), oversize=oversize) as app:
        query = "url=/test.jpg&w=640&q=75"
        await assert_error(app, query, 503, OVERSIZE_UNSTORED, "store", "OversizeNotStored")


@pytest.mark.anyio
async def test_a_bug_of_ours_is_internal(public_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with service(public_dir) as app:

        async def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(app.coordinator, "serve", broken)
        response = await app.get("url=/test.jpg&w=640&q=75")
        assert (response.status_code, response.text) == (500, "Internal Server Error")
        assert response.headers["cache-control"] == "no-store"
        record = app.recorder.records[-1]
        assert (record["error"], record["error_category"]) == ("RuntimeError", "internal")
        assert app.errors_by_category() == {"internal": 1}


def test_an_exception_escaping_the_route_is_a_plain_uncached_500(public_dir: Path) -> None:
    """Not caught by the route (here: the observer fails): Starlette's last handler answers."""

    def failing_observer(request: Request, record: RequestRecord) -> None:
        raise RuntimeError("a bug in the observer")

    coordinator = build_coordinator(
        Settings(public_dir=str(public_dir)), config=ImagesConfig(), store=MemoryStore()
    )
    app = create_app(coordinator, observer=failing_observer)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/_next/image?url=/test.jpg&w=640&q=75")
    assert (response.status_code, response.text) == (500, "Internal Server Error")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.anyio
async def test_a_store_outage_is_a_warning_once_not_a_stack_trace_per_call(
    public_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Failed writes are warnings without a traceback; once the breaker opens, silence."""
    caplog.set_level(logging.WARNING)
    async with service(public_dir, store=DownStore()) as app:
        for width in (640, 750, 828, 1080, 1200):
            response = await app.get(f"url=/test.jpg&w={width}&q=75")
            assert response.status_code == 200
        assert app.errors_by_category() == {}
    store_logs = [r for r in caplog.records if r.name == "handler.stores.guarded"]
    assert store_logs and all(r.levelno == logging.WARNING for r in store_logs)
    assert all(r.exc_info is None for r in caplog.records)
    assert sum("store unavailable" in r.getMessage() for r in store_logs) == 1
