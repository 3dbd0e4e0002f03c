"""Identical misses on different processes or hosts sharing a Redis store transform once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from handler.contract.config import load_images_config
from handler.entry.settings import Settings
from handler.entry.wiring import build_coordinator
from handler.http.app import create_app
from handler.stores.redis import RedisStore
from kit import imagegen
from kit.support import Clock, Route
from kit.upstream_server import Server

pytestmark = pytest.mark.anyio

QUERY = "/_next/image?url=%2Fphoto.jpg&w=640&q=75"
BUDGET = 5.0


@pytest.fixture
async def hosts(redis_url: str, upstream: Server) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two apps ("hosts") with their own memory and single-flight, one Redis, one origin."""
    prefix = f"shared-{id(upstream)}/"
    clients = []
    for _ in range(2):
        settings = Settings(
            origin=upstream.url(""), store="redis", redis_url=redis_url, timeout=BUDGET
        )
        coordinator = build_coordinator(
            settings,
            config=load_images_config(None),
            store=RedisStore(redis_url, prefix=prefix),
            clock=Clock(),
        )
        transport = httpx.ASGITransport(app=create_app(coordinator))
        clients.append(httpx.AsyncClient(transport=transport, base_url="http://h", timeout=30))
    yield clients
    for client in clients:
        await client.aclose()


async def test_sixteen_identical_misses_on_two_hosts_fetch_and_transform_once(
    hosts: list[httpx.AsyncClient], upstream: Server
) -> None:
    # A slow origin, so every request arrives while the first is still being worked on.
    body = imagegen.noise_jpeg(1200, 900)
    upstream.routes["/photo.jpg"] = Route(
        body=body, headers={"Content-Type": "image/jpeg"}, delay=0.5
    )
    answers: list[httpx.Response] = []

    async def get(client: httpx.AsyncClient) -> None:
        answers.append(await client.get(QUERY, headers={"accept": "image/webp"}))

    async with anyio.create_task_group() as tg:
        for i in range(16):
            tg.start_soon(get, hosts[i % 2])
    assert upstream.hits["/photo.jpg"] == 1  # one leader fetched; nobody else did
    assert [a.status_code for a in answers] == [200] * 16
    assert len({a.content for a in answers}) == 1  # one transform's bytes everywhere
    decoded = imagegen.decode(answers[0].content)
    assert (decoded.format, decoded.width) == ("webp", 640)

    later = await hosts[1].get(QUERY, headers={"accept": "image/webp"})
    assert later.headers["x-nextjs-cache"] == "HIT"


async def test_a_leader_that_never_finishes_does_not_block_the_others(
    hosts: list[httpx.AsyncClient], upstream: Server, redis_url: str
) -> None:
    body = imagegen.jpeg(800, 600)
    upstream.routes["/photo.jpg"] = Route(body=body, headers={"Content-Type": "image/jpeg"})
    # Another process took the lock and died: the lock only expires after the waiter's budget.
    store = RedisStore(redis_url, prefix=f"shared-{id(upstream)}/")
    lock = _lock_key_of(hosts)
    assert store.try_lock(lock, 60_000)
    started = anyio.current_time()
    response = await hosts[0].get(QUERY, headers={"accept": "image/webp"})
    assert response.status_code == 200
    waited = anyio.current_time() - started
    assert BUDGET - 2 < waited < BUDGET  # waited for the leader, then did the work in time
    assert upstream.hits["/photo.jpg"] == 1


def _lock_key_of(hosts: list[httpx.AsyncClient]) -> Any:
    from handler.request.keys import pointer_key, variant_key

    return pointer_key(f"/photo.jpg\0{variant_key('', 640, 75, 'image/webp')}")
