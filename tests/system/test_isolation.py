"""Transforms in child processes (handler/pipeline/isolation.py): a native crash, a transform over
its memory limit or past its deadline fails its own request (503 or 504, nothing stored) while hits
and other misses on the same worker go on; the child is replaced and the next miss succeeds.

The real pool and the real app; the children misbehave through the pool's test hook (``Fault``),
never over HTTP, and every wait is for a condition, with deadlines only a hang reaches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.testclient import TestClient

from handler.contract import errors
from handler.contract.config import ImagesConfig
from handler.entry import service
from handler.entry.settings import Settings
from handler.entry.wiring import build_app, build_coordinator
from handler.http.app import create_app
from handler.pipeline.animated import AnimatedOptions
from handler.pipeline.isolation import Fault, FaultAction, IsolatedTransforms
from handler.pipeline.transform import Plan, plan_transform, run_transform, setup_libvips
from handler.request.coordinator import Coordinator
from handler.request.keys import pointer_key, variant_key
from handler.stores.memory import MemoryStore
from kit import imagegen
from kit.support import HANG_SECONDS, wait_for, wait_until

pytestmark = pytest.mark.anyio

MISSES = ("crash.jpg", "other.jpg", "after.jpg")


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("public")
    (root / "hit.jpg").write_bytes(imagegen.jpeg(320, 240))
    for seed, name in enumerate(MISSES):
        (root / name).write_bytes(imagegen.noise_jpeg(900, 900, seed=seed))
    return root


@dataclass
class Isolated:
    """An app whose transforms run in the real pool, its store, and a client."""

    coordinator: Coordinator
    store: MemoryStore
    client: httpx.AsyncClient
    public: Path

    @property
    def pool(self) -> IsolatedTransforms:
        assert self.coordinator.isolation is not None
        return self.coordinator.isolation

    async def get(self, name: str, width: int = 640) -> httpx.Response:
        query = f"/_next/image?url=%2F{name}&w={width}&q=75"
        return await self.client.get(query, headers={"accept": "image/webp"})

    async def hits(self, count: int = 6) -> list[httpx.Response]:
        """``count`` hits at once, all of which must be answered from the store."""
        answers: list[httpx.Response] = []

        async def hit() -> None:
            answers.append(await self.get("hit.jpg"))

        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(hit)
        return answers

    def stored_anything_for(self, name: str, width: int = 640) -> bool:
        """Whether the store holds the pointer or the variant of this image."""
        source_hash = hashlib.sha256((self.public / name).read_bytes()).hexdigest()
        vkey = variant_key(source_hash, width, 75, "image/webp")
        pointer = self.store.get_pointer(pointer_key(f"/{name}"))
        return pointer is not None or self.store.get_variant(vkey) is not None

    async def ready_children(self, count: int) -> list[int]:
        """The pids of the children once ``count`` of them are started and idle."""
        await wait_until(lambda: len(self.pool.pids()) == count)
        return self.pool.pids()


@pytest.fixture
async def isolated_for(public: Path) -> AsyncIterator[Callable[..., Isolated]]:
    made: list[Isolated] = []

    def make(config: ImagesConfig | None = None, **settings: Any) -> Isolated:
        settings = {"max_transforms": 2, **settings}
        store = MemoryStore()
        coordinator = build_coordinator(
            Settings(public_dir=str(public), **settings),
            config=config or ImagesConfig(),
            store=store,
            isolate=True,
        )
        transport = httpx.ASGITransport(app=create_app(coordinator))
        client = httpx.AsyncClient(
            transport=transport, base_url="http://test", timeout=HANG_SECONDS
        )
        made.append(Isolated(coordinator, store, client, public))
        return made[-1]

    yield make
    for isolated in made:
        await isolated.client.aclose()
        isolated.pool.close()


def assert_transform_failed(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert response.text == errors.TRANSFORM_FAILED
    assert response.headers["retry-after"] == "1"
    assert response.headers["cache-control"] == "no-store"


def assert_hits(answers: list[httpx.Response]) -> None:
    assert [(a.status_code, a.headers["x-nextjs-cache"]) for a in answers] == [(200, "HIT")] * len(
        answers
    )


def assert_webp(response: httpx.Response, cache: str = "MISS", width: int = 640) -> None:
    assert (response.status_code, response.headers["x-nextjs-cache"]) == (200, cache)
    decoded = imagegen.decode(response.content)
    assert (decoded.format, decoded.width) == ("webp", width)


async def test_a_native_crash_fails_its_request_alone(
    isolated_for: Callable[..., Isolated],
) -> None:
    app = isolated_for()
    pool = app.pool
    await app.ready_children(2)
    assert (await app.get("hit.jpg")).headers["x-nextjs-cache"] == "MISS"
    crash, other = Fault("segv"), Fault("hold")
    answers: dict[str, httpx.Response] = {}

    async def fetch(name: str) -> None:
        answers[name] = await app.get(name)

    async with anyio.create_task_group() as tg:
        pool.inject(crash)
        tg.start_soon(fetch, "crash.jpg")
        await wait_until(crash.started.is_set)
        pool.inject(other)
        tg.start_soon(fetch, "other.jpg")
        await wait_until(other.started.is_set)
        # Both children are mid-transform: hits are answered all the same.
        assert_hits(await app.hits())
        crash.release.set()  # the crash, with hits in flight
        assert_hits(await app.hits())
        await wait_until(lambda: "crash.jpg" in answers)
        assert "other.jpg" not in answers  # the other miss is still in its child
        assert_hits(await app.hits())
        other.release.set()

    assert_transform_failed(answers["crash.jpg"])
    assert_webp(answers["other.jpg"])  # in flight through the crash, unharmed
    assert pool.failures == {"crashed": 1}
    assert not app.stored_anything_for("crash.jpg")
    children = await app.ready_children(2)  # replaced, started ahead of the next miss
    assert crash.pid not in children and other.pid in children
    assert_webp(await app.get("crash.jpg"))
    assert app.stored_anything_for("crash.jpg")


@pytest.mark.parametrize(
    "action",
    [
        "hog",  # fills its memory bit by bit: the resident limit, a kill
        "grab",  # one allocation past what the address space limit leaves: RLIMIT_AS
    ],
)
async def test_a_transform_over_its_memory_limit_fails_its_request_alone(
    isolated_for: Callable[..., Isolated], action: FaultAction
) -> None:
    app = isolated_for()
    pool = app.pool
    await app.ready_children(2)
    assert (await app.get("hit.jpg")).status_code == 200
    fault = Fault(action)
    answers: dict[str, httpx.Response] = {}

    async def fetch(name: str) -> None:
        answers[name] = await app.get(name)

    async with anyio.create_task_group() as tg:
        pool.inject(fault)
        tg.start_soon(fetch, "crash.jpg")
        await wait_until(fault.started.is_set)
        tg.start_soon(fetch, "other.jpg")  # another miss, in the other child
        fault.release.set()
        assert_hits(await app.hits())

    assert_transform_failed(answers["crash.jpg"])
    assert_webp(answers["other.jpg"])
    assert pool.failures == {"memory": 1}
    assert not app.stored_anything_for("crash.jpg")
    children = await app.ready_children(2)
    assert fault.pid not in children  # never trusted with another transform
    assert_webp(await app.get("crash.jpg"))


async def test_a_transform_past_the_request_deadline_is_a_504_and_its_child_is_killed(
    isolated_for: Callable[..., Isolated],
) -> None:
    app = isolated_for(timeout=3.0)  # the hung transform waits this long, nothing else does
    await app.ready_children(2)
    hang = Fault("hang")
    app.pool.inject(hang)
    response = await app.get("crash.jpg")
    assert (response.status_code, response.text) == (504, errors.TIME_BUDGET_EXCEEDED)
    assert app.pool.failures == {"cancelled": 1}
    assert not app.stored_anything_for("crash.jpg")
    wait_for(lambda: not Path(f"/proc/{hang.pid}").exists(), "the hung child to be gone")
    assert hang.pid not in await app.ready_children(2)


async def test_a_child_past_libvips_own_timeout_is_killed_and_the_original_served_once(
    isolated_for: Callable[..., Isolated],
) -> None:
    """libvips stops itself at sharp's timeout; a child still busy a second later is killed,
    with the timeout's own answer: the original bytes, uncacheable, never stored."""
    app = isolated_for(config=dataclasses.replace(ImagesConfig(), img_opt_timeout_seconds=0.1))
    await app.ready_children(2)
    hang = Fault("hang")
    app.pool.inject(hang)
    response = await app.get("crash.jpg")
    assert response.status_code == 200
    assert response.content == (app.public / "crash.jpg").read_bytes()
    assert response.headers["cache-control"] == "private, no-store"
    assert app.pool.failures == {"overdue": 1}
    assert not app.stored_anything_for("crash.jpg")
    assert hang.pid not in await app.ready_children(2)


async def test_a_child_is_replaced_after_its_transforms_per_child(
    isolated_for: Callable[..., Isolated],
) -> None:
    app = isolated_for(max_transforms=1, transforms_per_child=2)
    (first,) = await app.ready_children(1)
    for width in (64, 96):
        assert_webp(await app.get("after.jpg", width), width=width)
    (second,) = await app.ready_children(1)
    assert second != first and app.pool.retired == 1
    wait_for(lambda: not Path(f"/proc/{first}").exists(), "the retired child to exit")
    assert_webp(await app.get("after.jpg", 128), width=128)
    assert app.pool.pids() == [second] and app.pool.failures == {}


async def test_a_child_that_died_idle_is_replaced_before_the_next_miss_uses_it(
    isolated_for: Callable[..., Isolated],
) -> None:
    """Killed between transforms (the kernel's OOM killer, an operator): the next miss finds it
    gone before sending it anything, and gets a fresh child instead of a 503."""
    app = isolated_for(max_transforms=1)
    (pid,) = await app.ready_children(1)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}/status").exists() or zombie(pid), "the child dead")
    assert_webp(await app.get("after.jpg"))
    assert app.pool.failures == {} and app.pool.started == 2
    assert pid not in app.pool.pids()


def zombie(pid: int) -> bool:
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


@pytest.fixture(scope="module")
def one_child() -> Iterator[IsolatedTransforms]:
    setup_libvips()  # for the transforms made in this process, to compare
    pool = IsolatedTransforms(ImagesConfig(), children=1, transforms_per_child=500)
    yield pool
    pool.close()


# What the child gets of a plan's header is what the transform reads of it: these sources take
# every branch that reads it (orientation, ICC and CMYK handling, alpha, an animation).
SOURCES: dict[str, tuple[bytes, str]] = {
    "JPEG turned by EXIF": (imagegen.jpeg(300, 200, orientation=6), "image/webp"),
    "JPEG mirrored by EXIF": (imagegen.jpeg(300, 200, orientation=2), "image/jpeg"),
    "JPEG in Display P3": (imagegen.jpeg(300, 200, icc="p3"), "image/webp"),
    "CMYK JPEG": (imagegen.jpeg(300, 200, icc="cmyk"), "image/jpeg"),
    "CMYK JPEG without its profile": (
        imagegen.jpeg(300, 200, icc="cmyk", embed_profile=False),
        "image/webp",
    ),
    "PNG with alpha": (imagegen.png(300, 200, alpha=True), "image/avif"),
    "16-bit PNG": (imagegen.png(300, 200, bits=16), "image/png"),
    "WebP with alpha": (imagegen.webp(300, 200, alpha=True), "image/webp"),
    "TIFF": (imagegen.tiff(300, 200), ""),
    "animated GIF": (imagegen.animated_gif(3, 120, 80), "image/webp"),
}


@pytest.mark.parametrize("name", SOURCES)
async def test_a_child_makes_the_bytes_the_worker_would(
    one_child: IsolatedTransforms, name: str
) -> None:
    source, mime_type = SOURCES[name]
    plan = plan_transform(
        source,
        width=64,
        quality=75,
        mime_type=mime_type,
        config=ImagesConfig(),
        animated=AnimatedOptions(mode="webp"),
    )
    assert isinstance(plan, Plan)
    deadline = anyio.current_time() + HANG_SECONDS
    in_child = await one_child.run(plan, deadline=deadline)
    assert in_child == run_transform(plan, ImagesConfig(), deadline=deadline)
    assert in_child.kind == "optimized"


@pytest.fixture
def serve_environment(public: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("NEXT_IMAGE_ISOLATE_TRANSFORMS", "NEXT_IMAGE_STORE", "NEXT_IMAGE_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NEXT_IMAGE_PUBLIC_DIR", str(public))
    monkeypatch.setenv("NEXT_IMAGE_MAX_TRANSFORMS", "1")
    yield


def test_serve_isolates_by_default_and_stops_its_children_with_the_app(
    serve_environment: None,
) -> None:
    app = service.worker_app()
    pool = app.state.coordinator.isolation
    assert isinstance(pool, IsolatedTransforms)
    with TestClient(app) as client:
        response = client.get("/_next/image?url=%2Fhit.jpg&w=64&q=75")
        assert response.status_code == 200
        wait_for(lambda: len(pool.pids()) == 1, "the child back in the pool")
        (pid,) = pool.pids()
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), "the child to exit with the app")


def test_isolation_is_a_setting_and_off_on_lambda_unless_asked(
    serve_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEXT_IMAGE_ISOLATE_TRANSFORMS", "false")
    assert service.worker_app().state.coordinator.isolation is None
    settings = Settings(public_dir="/nonexistent")
    assert build_app(settings).state.coordinator.isolation is None  # Lambda's build
    asked = build_app(dataclasses.replace(settings, isolate_transforms=True))
    assert isinstance(asked.state.coordinator.isolation, IsolatedTransforms)
    asked.state.coordinator.isolation.close()
    # A daemonic process (a multiprocessing.Pool worker, as warm runs) may have no children.
    monkeypatch.setattr(multiprocessing.current_process(), "daemon", True)
    daemonic = build_app(dataclasses.replace(settings, isolate_transforms=True))
    assert daemonic.state.coordinator.isolation is None
