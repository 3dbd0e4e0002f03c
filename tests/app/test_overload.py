"""Overload and timeouts through the app: bounded transforms, fast 503s, hits that never wait,
and a timeout's fallback that is served once and never stored."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.testclient import TestClient

from handler.commands.invoke import FakeContext, function_url_event
from handler.contract.config import load_images_config
from handler.entry.lambda_handler import build_handler
from handler.entry.settings import Settings
from handler.entry.wiring import build_app, build_coordinator
from handler.http.app import create_app
from handler.request import transforms as transforms_module
from handler.request.coordinator import Coordinator
from handler.stores.memory import MemoryStore
from kit import imagegen
from kit.support import HANG_SECONDS, Clock, wait_for, wait_until

pytestmark = pytest.mark.anyio

BUSY = "The image optimizer is busy; retry shortly"


@pytest.fixture(scope="module")
def heavy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A public folder of distinct photo-like sources, each ~1 s of AVIF encoding."""
    root = tmp_path_factory.mktemp("public")
    for seed in range(4):
        (root / f"heavy{seed}.jpg").write_bytes(imagegen.noise_jpeg(1800, 1800, seed=seed))
    (root / "small.png").write_bytes(imagegen.png(64, 64))
    return root


def coordinator_for(public: Path, store: MemoryStore | None = None, **settings: Any) -> Coordinator:
    return build_coordinator(
        Settings(public_dir=str(public), **settings),
        config=load_images_config('{"formats": ["image/avif", "image/webp"]}'),
        store=store or MemoryStore(),
        clock=Clock(),
    )


@pytest.fixture
async def client_for() -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    def make(coordinator: Coordinator) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=create_app(coordinator))
        client = httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def query(name: str, width: int = 1920) -> str:
    return f"/_next/image?url=%2F{name}&w={width}&q=75"


class HeldTransforms:
    """``run_transform`` held until ``release``: while it is, the test knows what runs and what
    waits, however fast or slow the machine. Released at the end of the test whatever happens."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0  # transforms that reached run_transform

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = transforms_module.run_transform

        def held(*args: Any, **kwargs: Any) -> Any:
            self.started += 1
            self.release.wait()
            return real(*args, **kwargs)

        monkeypatch.setattr(transforms_module, "run_transform", held)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldTransforms]:
    transforms = HeldTransforms()
    transforms.install(monkeypatch)
    yield transforms
    transforms.release.set()


async def test_a_burst_beyond_the_queue_gets_fast_503s_and_the_rest_correct_images(
    heavy: Path, client_for: Any, held: HeldTransforms
) -> None:
    # A budget only a hang reaches: the transforms run niced, and beside CPU hogs take long.
    coordinator = coordinator_for(heavy, max_transforms=1, max_queue=1, timeout=2 * HANG_SECONDS)
    admission = coordinator.admission
    client = client_for(coordinator)
    answers: dict[int, httpx.Response] = {}
    most_running = 0

    async def get(seed: int) -> None:
        response = await client.get(query(f"heavy{seed}.jpg"), headers={"accept": "image/avif"})
        answers[seed] = response

    async with anyio.create_task_group() as tg:
        tg.start_soon(get, 0)  # arrival order 0, 1, 2, 3: each in place before the next
        await wait_until(lambda: held.started == 1 and admission.running == 1)
        tg.start_soon(get, 1)
        await wait_until(lambda: admission.queued == 1)
        for seed in (2, 3):
            tg.start_soon(get, seed)
            await wait_until(lambda: seed in answers)  # noqa: B023 (awaited here)
        # Refused at once: answered while the first transform has not even started its work.
        assert not held.release.is_set() and (admission.running, admission.queued) == (1, 1)
        held.release.set()
        while len(answers) < 4:
            most_running = max(most_running, admission.running)
            await anyio.sleep(0.01)

    assert most_running == 1
    statuses = [answers[seed].status_code for seed in range(4)]
    assert statuses == [200, 200, 503, 503]  # one running, one queued, the rest refused
    for seed in (0, 1):
        decoded = imagegen.decode(answers[seed].content)
        assert (decoded.format, decoded.width) == ("avif", 1800)  # never upscaled
    for seed in (2, 3):
        refused = answers[seed]
        assert refused.text == BUSY
        assert refused.headers["cache-control"] == "no-store"
        assert int(refused.headers["retry-after"]) >= 1


async def test_a_transform_whose_plan_alone_overruns_the_budget_is_refused_at_once(
    tmp_path: Path, client_for: Any, held: HeldTransforms
) -> None:
    """Nothing runs or waits, but a 3840 px AVIF of a 16 MP photo is ~5 s on a reference core
    by its plan, beyond a 3 s budget: 503 busy before its transform starts, not a 504 (or the
    original bytes) once the budget has run out."""
    (tmp_path / "big.jpg").write_bytes(imagegen.jpeg(4000, 4000))
    client = client_for(coordinator_for(tmp_path, timeout=3.0))
    response = await client.get(query("big.jpg", 3840), headers={"accept": "image/avif"})
    assert (response.status_code, response.text) == (503, BUSY)
    assert response.headers["cache-control"] == "no-store"
    assert int(response.headers["retry-after"]) >= 1
    assert held.started == 0  # refused before any transform started


async def test_the_memory_budget_runs_big_transforms_one_at_a_time(
    heavy: Path, client_for: Any
) -> None:
    coordinator = coordinator_for(
        heavy, max_transforms=2, memory_budget=1, timeout=2 * HANG_SECONDS
    )
    client = client_for(coordinator)
    most_running = 0
    statuses: list[int] = []

    async def get(seed: int) -> None:
        response = await client.get(query(f"heavy{seed}.jpg", 640))
        statuses.append(response.status_code)

    async with anyio.create_task_group() as tg:
        for seed in range(2):
            tg.start_soon(get, seed)
        while len(statuses) < 2:
            most_running = max(most_running, coordinator.admission.running)
            await anyio.sleep(0.005)
    assert statuses == [200, 200]
    assert most_running == 1


async def test_a_hit_never_waits_behind_running_transforms(
    heavy: Path, client_for: Any, held: HeldTransforms
) -> None:
    """Before admission control a hit waited 15 s behind transforms. Here the transforms are held
    until the hits are answered, so a hit that waited for one would never be answered; how long a
    hit takes during a burst is bench/budgets.py's (and overload.py's)."""
    coordinator = coordinator_for(heavy, max_transforms=1, timeout=2 * HANG_SECONDS)
    client = client_for(coordinator)
    hit = query("small.png", 64)
    held.release.set()
    assert (await client.get(hit)).headers["x-nextjs-cache"] == "MISS"
    held.release.clear()
    started = held.started

    async def burst(seed: int) -> None:
        await client.get(query(f"heavy{seed}.jpg"), headers={"accept": "image/avif"})

    async with anyio.create_task_group() as tg:
        for seed in range(3):
            tg.start_soon(burst, seed)
        admission = coordinator.admission
        await wait_until(lambda: held.started == started + 1 and admission.queued == 2)
        with anyio.fail_after(HANG_SECONDS):
            for _ in range(5):
                response = await client.get(hit)
                assert response.headers["x-nextjs-cache"] == "HIT"
        assert (admission.running, admission.queued) == (1, 2)  # all five while they waited
        held.release.set()


async def test_a_timeout_fallback_is_served_once_uncached_and_never_stored(
    heavy: Path, client_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    hurried = coordinator_for(heavy, store=store)
    hurried.config = dataclasses.replace(hurried.config, img_opt_timeout_seconds=0.001)
    source = (heavy / "heavy0.jpg").read_bytes()

    webp = {"accept": "image/webp"}
    response = await client_for(hurried).get(query("heavy0.jpg", 640), headers=webp)
    assert response.status_code == 200
    assert response.content == source  # the original bytes, as Next serves on a failure
    assert response.headers["cache-control"] == "private, no-store"
    assert response.headers["x-nextjs-cache"] == "MISS"
    assert "timed out; serving the original once, uncached" in caplog.text
    assert store.total_bytes == 0  # no variant, no pointer

    # The same store behind an unhurried instance: nothing wrong was kept, so this transforms.
    unhurried = client_for(coordinator_for(heavy, store=store))
    response = await unhurried.get(query("heavy0.jpg", 640), headers=webp)
    assert response.headers["x-nextjs-cache"] == "MISS"
    assert response.headers["cache-control"] == "public, max-age=14400, must-revalidate"
    decoded = imagegen.decode(response.content)
    assert (decoded.format, decoded.width) == ("webp", 640)


def test_memory_goes_back_once_transforms_stop_not_after_each(
    public_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trim after each transform made the next one fault its pages in again (~20 ms a miss).

    First three transforms with the idle time out of reach: none trims after it. Then one with a
    short idle time: once it is over, memory is given back, once. (With a short idle time all
    along, a slow machine's pause between two requests is idle time too.)
    """
    trims: list[float] = []
    monkeypatch.setattr(transforms_module, "release_free_memory", lambda: trims.append(1))
    monkeypatch.setattr(transforms_module, "IDLE_TRIM_SECONDS", 3600.0)
    with TestClient(build_app(Settings(public_dir=str(public_dir)), service=True)) as client:
        for width in (640, 384, 256):
            assert client.get(f"/_next/image?url=%2Ftest.jpg&w={width}&q=75").status_code == 200
            assert trims == []  # the transform's pages stay for the next one
        monkeypatch.setattr(transforms_module, "IDLE_TRIM_SECONDS", 0.05)
        assert client.get("/_next/image?url=%2Ftest.jpg&w=128&q=75").status_code == 200
        wait_for(lambda: trims, "memory given back after the burst")
    assert trims == [1]  # once, after the burst


def test_lambda_never_gives_memory_back(public_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The instance's memory is its own: pages given back would be faulted in again."""
    trims: list[float] = []
    monkeypatch.setattr(transforms_module, "release_free_memory", lambda: trims.append(1))
    monkeypatch.setattr(transforms_module, "IDLE_TRIM_SECONDS", 0.0)
    handle = build_handler(Settings(public_dir=str(public_dir)))
    for width in (640, 384, 256):
        event = function_url_event(f"url=%2Ftest.jpg&w={width}&q=75", "image/webp")
        assert handle(event, FakeContext())["statusCode"] == 200
        time.sleep(0.05)
    assert trims == []
