"""The filesystem store's in-memory tier: hot hits without a file read or a thread, a byte bound,
and pointers refreshed by another process seen within the pointer TTL.

(The store contract itself runs on the tiered store in ``test_stores.py``.)
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import MakeApp

from handler.settings import Settings
from handler.stores.base import Pointer, Variant
from handler.stores.filesystem import FilesystemStore
from handler.stores.guarded import GuardedStore
from handler.stores.tiered import POINTER_TTL, VARIANT_TTL, TieredStore
from handler.wiring import build_store

POINTER = Pointer("ab" * 32, "etag", 'W/"1-2"', 14400, 1_800_000_000.0)
REFRESHED = Pointer("cd" * 32, "etag2", 'W/"3-4"', 14400, 1_800_000_060.0)
VARIANT = Variant(b"x" * 1000, "image/webp", "v-etag", "optimized")


class Clock:
    """A settable monotonic clock, so TTLs are tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def forget_files(root: Path) -> None:
    """Remove every record behind the store's back (as another worker's eviction would)."""
    for folder in ("pointers", "variants"):
        shutil.rmtree(root / folder, ignore_errors=True)


def test_a_hit_after_a_write_reads_no_file(tmp_path: Path) -> None:
    store = TieredStore(FilesystemStore(tmp_path))
    store.put_pointer("p", POINTER)
    store.put_variant("src/640w", VARIANT)
    assert (tmp_path / "pointers" / "p").is_file()  # written through to the folder
    forget_files(tmp_path)
    assert store.get_pointer("p") == POINTER
    assert store.get_variant("src/640w") == VARIANT
    assert store.cached_pointer("p") == POINTER
    assert store.cached_variant("src/640w") == VARIANT


def test_a_record_read_from_the_folder_is_then_served_from_memory(tmp_path: Path) -> None:
    FilesystemStore(tmp_path).put_variant("src/640w", VARIANT)  # another process wrote it
    store = TieredStore(FilesystemStore(tmp_path))
    assert store.cached_variant("src/640w") is None
    assert store.get_variant("src/640w") == VARIANT  # read from the folder once
    forget_files(tmp_path)
    assert store.get_variant("src/640w") == VARIANT


def test_guarded_store_answers_tier_hits_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TieredStore(FilesystemStore(tmp_path))
    store.put_pointer("p", POINTER)
    store.put_variant("src/640w", VARIANT)
    FilesystemStore(tmp_path).put_pointer("cold", REFRESHED)
    guarded = GuardedStore(store)
    threads: list[Any] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(*args: Any, **kwargs: Any) -> Any:
        threads.append(args[0])
        return await run_sync(*args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)

    async def hits() -> tuple[Pointer | None, Variant | None, Pointer | None]:
        pointer = await guarded.get_pointer("p")
        variant = await guarded.get_variant("src/640w")
        assert threads == []  # both answered without a thread
        return pointer, variant, await guarded.get_pointer("cold")

    assert anyio.run(hits) == (POINTER, VARIANT, REFRESHED)
    assert len(threads) == 1  # a miss of the tier goes to the folder, in a thread


def test_a_pointer_refreshed_by_another_process_is_seen_after_the_pointer_ttl(
    tmp_path: Path,
) -> None:
    clock = Clock()
    ours = TieredStore(FilesystemStore(tmp_path), clock=clock)
    theirs = TieredStore(FilesystemStore(tmp_path), clock=clock)  # another worker, same folder
    ours.put_pointer("p", POINTER)
    theirs.put_pointer("p", REFRESHED)
    assert theirs.get_pointer("p") == REFRESHED
    clock.now += POINTER_TTL * 0.9
    assert ours.get_pointer("p") == POINTER  # stale here, for less than the TTL
    clock.now += POINTER_TTL * 0.1
    assert ours.cached_pointer("p") is None
    assert ours.get_pointer("p") == REFRESHED


def test_a_hot_variant_is_read_from_the_folder_again_after_the_variant_ttl(
    tmp_path: Path,
) -> None:
    """That read keeps it recently used in the folder's LRU, shared by every worker; and a
    variant the folder evicted stops being served."""
    clock = Clock()
    store = TieredStore(FilesystemStore(tmp_path), clock=clock)
    store.put_variant("src/640w", VARIANT)
    path = tmp_path / "variants" / "src" / "640w"
    written = path.stat().st_mtime_ns
    clock.now += VARIANT_TTL
    assert store.cached_variant("src/640w") is None
    assert store.get_variant("src/640w") == VARIANT
    assert path.stat().st_mtime_ns > written
    forget_files(tmp_path)
    clock.now += VARIANT_TTL
    assert store.get_variant("src/640w") is None


def test_the_tier_stays_within_its_byte_bound_least_recently_used_first(tmp_path: Path) -> None:
    store = TieredStore(FilesystemStore(tmp_path), max_bytes=10_000)
    for n in range(30):
        store.put_variant(f"src/{n}w", VARIANT)
        assert store.get_variant("src/0w") == VARIANT  # read, so the most recently used
        assert 0 < store.tier_bytes <= 10_000
    held = [n for n in range(30) if store.cached_variant(f"src/{n}w") is not None]
    assert 0 in held
    assert 2 < len(held) < 10
    assert held[1:] == list(range(30 - len(held) + 1, 30))  # the newest, oldest evicted first
    assert store.get_variant("src/1w") == VARIANT  # still in the folder


def test_a_record_larger_than_the_tier_is_only_in_the_folder(tmp_path: Path) -> None:
    store = TieredStore(FilesystemStore(tmp_path), max_bytes=500)
    store.put_variant("src/640w", VARIANT)
    assert store.cached_variant("src/640w") is None
    assert store.tier_bytes == 0
    assert store.get_variant("src/640w") == VARIANT


def test_a_failed_write_drops_the_key_from_the_tier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = FilesystemStore(tmp_path)
    store = TieredStore(folder)
    store.put_pointer("p", POINTER)

    def fails(key: str, pointer: Pointer) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(folder, "put_pointer", fails)
    with pytest.raises(OSError):
        store.put_pointer("p", REFRESHED)
    assert store.cached_pointer("p") is None  # the folder may hold either: ask it next time
    assert store.get_pointer("p") == POINTER


def test_a_slow_read_never_overwrites_a_write_made_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = FilesystemStore(tmp_path)
    folder.put_pointer("p", POINTER)
    store = TieredStore(folder)
    read = folder.get_pointer

    def read_then_overtaken(key: str) -> Pointer | None:
        old = read(key)
        store.put_pointer(key, REFRESHED)  # another request's write lands during the read
        return old

    monkeypatch.setattr(folder, "get_pointer", read_then_overtaken)
    assert store.get_pointer("p") == POINTER  # that request sees what it read
    assert store.cached_pointer("p") == REFRESHED  # the tier keeps the newer write
    assert FilesystemStore(tmp_path).get_pointer("p") == REFRESHED


def test_the_filesystem_store_has_the_tier_unless_its_size_is_zero(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"NEXT_IMAGE_STORE": "filesystem", "NEXT_IMAGE_CACHE_DIR": str(tmp_path)}
    )
    assert isinstance(build_store(settings), TieredStore)
    off = Settings.from_env(
        {"NEXT_IMAGE_HOT_CACHE_BYTES": "0"}, store="filesystem", cache_dir=str(tmp_path)
    )
    assert isinstance(build_store(off), FilesystemStore)


def test_the_app_serves_hits_from_the_tier(make_app: MakeApp, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    app = make_app(store=TieredStore(FilesystemStore(root)))
    first = app.get("url=%2Ftest.jpg&w=640&q=75")
    assert first.headers["x-nextjs-cache"] == "MISS"
    forget_files(root)
    again = app.get("url=%2Ftest.jpg&w=640&q=75")
    assert again.headers["x-nextjs-cache"] == "HIT"
    assert again.content == first.content
