"""The filesystem store's in-memory tier: hot hits without a file read or a thread, a byte bound,
pointers refreshed or removed by another process seen at once (their file's identity), and
files the page cache holds read on the event loop.

(The store contract itself runs on the tiered store in ``test_stores.py``.)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from handler.entry.settings import Settings
from handler.entry.wiring import build_store
from handler.model import Pointer, Variant
from handler.request.keys import pointer_key
from handler.stores import filesystem
from handler.stores.filesystem import FilesystemStore, NotCached
from handler.stores.guarded import GuardedStore
from handler.stores.tiered import RECENCY_SECONDS, TieredStore
from kit.support import MakeApp, counting_threads

POINTER = Pointer("ab" * 32, "etag", 'W/"1-2"', 14400, 1_800_000_000.0)
REFRESHED = Pointer("cd" * 32, "etag2", 'W/"3-4"', 14400, 1_800_000_060.0)
VARIANT = Variant(b"x" * 1000, "image/webp", "v-etag", "optimized")


class Clock:
    """A settable monotonic clock, so TTLs are tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def forget_files(root: Path, folders: tuple[str, ...] = ("pointers", "variants")) -> None:
    """Remove every record behind the store's back (as another worker's eviction would)."""
    for folder in folders:
        shutil.rmtree(root / folder, ignore_errors=True)


def not_cached(fd: int, size: int) -> bytes:
    raise NotCached  # as if the page cache held none of the file


def held(store: TieredStore, key: str) -> bool:
    """Whether the tier holds this variant in memory (no file is read to tell)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(filesystem, "_read_cached", not_cached)
        return store.cached_variant(key) is not None


def test_a_hit_after_a_write_reads_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = FilesystemStore(tmp_path)
    store = TieredStore(folder)
    store.put_pointer("p", POINTER)
    store.put_variant("src/640w", VARIANT)
    assert (tmp_path / "pointers" / "p").is_file()  # written through to the folder
    assert (tmp_path / "variants" / "src" / "640w").is_file()
    monkeypatch.setattr(folder, "read_pointer", None)
    monkeypatch.setattr(folder, "read_variant", None)
    assert store.get_pointer("p") == POINTER
    assert store.get_variant("src/640w") == VARIANT
    assert store.cached_pointer("p") == POINTER
    assert store.cached_variant("src/640w") == VARIANT


def test_a_record_read_from_the_folder_is_then_served_from_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FilesystemStore(tmp_path).put_variant("src/640w", VARIANT)  # another process wrote it
    store = TieredStore(FilesystemStore(tmp_path))
    with monkeypatch.context() as patch:
        patch.setattr(filesystem, "_read_cached", not_cached)
        assert store.cached_variant("src/640w") is None  # it would wait for the disk
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
    FilesystemStore(tmp_path).put_variant("src/750w", VARIANT)
    guarded = GuardedStore(store)
    threads = counting_threads(monkeypatch)

    async def hits() -> list[object]:
        return [
            await guarded.get_pointer("p"),
            await guarded.get_variant("src/640w"),
            await guarded.get_pointer("cold"),  # not held, but its file is in the page cache
            await guarded.get_variant("src/750w"),
        ]

    assert anyio.run(hits) == [POINTER, VARIANT, REFRESHED, VARIANT]
    assert threads == []  # all answered without a thread


def test_a_file_the_page_cache_lacks_is_read_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FilesystemStore(tmp_path).put_pointer("cold", REFRESHED)
    FilesystemStore(tmp_path).put_variant("src/640w", VARIANT)
    guarded = GuardedStore(TieredStore(FilesystemStore(tmp_path)))
    monkeypatch.setattr(filesystem, "_read_cached", not_cached)
    threads = counting_threads(monkeypatch)

    async def reads() -> list[object]:
        return [await guarded.get_pointer("cold"), await guarded.get_variant("src/640w")]

    assert anyio.run(reads) == [REFRESHED, VARIANT]
    assert len(threads) == 2  # the event loop never waits for the disk
    threads.clear()
    assert anyio.run(reads) == [REFRESHED, VARIANT]
    assert threads == []  # then held


def test_a_held_pointer_costs_a_stat_and_no_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = FilesystemStore(tmp_path)
    store = TieredStore(folder)
    store.put_pointer("p", POINTER)
    reads: list[str] = []
    read = folder.read_pointer

    def counted(key: str, **kwargs: Any) -> Any:
        reads.append(key)
        return read(key, **kwargs)

    monkeypatch.setattr(folder, "read_pointer", counted)
    assert [store.cached_pointer("p") for _ in range(3)] == [POINTER] * 3
    assert reads == []


def test_a_pointer_refreshed_by_another_process_is_seen_at_once(tmp_path: Path) -> None:
    clock = Clock()
    ours = TieredStore(FilesystemStore(tmp_path), clock=clock)
    theirs = TieredStore(FilesystemStore(tmp_path), clock=clock)  # another worker, same folder
    ours.put_pointer("p", POINTER)
    assert ours.cached_pointer("p") == POINTER
    theirs.put_pointer("p", REFRESHED)
    assert ours.cached_pointer("p") == REFRESHED  # no clock moved: the file changed
    assert ours.get_pointer("p") == REFRESHED
    ours.put_pointer("p", POINTER)
    assert theirs.cached_pointer("p") == POINTER


def test_a_pointer_removed_by_another_process_is_a_miss_at_once(tmp_path: Path) -> None:
    ours = TieredStore(FilesystemStore(tmp_path))
    ours.put_pointer("p", POINTER)
    ours.put_pointer("q", POINTER)
    assert FilesystemStore(tmp_path).delete_pointers(["p"]) == 1  # next-image purge
    assert ours.cached_pointer("p") is None
    assert ours.get_pointer("p") is None
    forget_files(tmp_path)  # evicted by another worker
    assert ours.cached_pointer("q") is None


def test_a_pointer_read_because_another_process_changed_it_is_not_touched(
    tmp_path: Path,
) -> None:
    """So that workers serving the same pointer do not keep changing it for each other."""
    ours = TieredStore(FilesystemStore(tmp_path))
    ours.put_pointer("p", POINTER)
    theirs = FilesystemStore(tmp_path)
    assert theirs.get_pointer("p") == POINTER  # their read touches the file
    touched = (tmp_path / "pointers" / "p").stat().st_mtime_ns
    assert ours.cached_pointer("p") == POINTER  # read again, not touched
    assert (tmp_path / "pointers" / "p").stat().st_mtime_ns == touched
    assert ours.cached_pointer("p") == POINTER


def test_a_held_record_is_read_from_the_folder_again_after_the_recency_interval(
    tmp_path: Path,
) -> None:
    """That read keeps it recently used in the folder's LRU, shared by every worker; and a
    variant the folder evicted stops being served."""
    clock = Clock()
    store = TieredStore(FilesystemStore(tmp_path), clock=clock)
    store.put_variant("src/640w", VARIANT)
    store.put_pointer("p", POINTER)
    variant = tmp_path / "variants" / "src" / "640w"
    pointer = tmp_path / "pointers" / "p"
    for path in (variant, pointer):  # written a minute ago, as far as the folder can tell
        aged = path.stat().st_mtime_ns - 60 * 10**9
        os.utime(path, ns=(aged, aged))
    assert store.cached_pointer("p") == POINTER  # read again (changed), not touched
    written = variant.stat().st_mtime_ns, pointer.stat().st_mtime_ns
    clock.now += RECENCY_SECONDS * 0.9
    assert store.cached_variant("src/640w") == VARIANT
    assert store.cached_pointer("p") == POINTER
    assert (variant.stat().st_mtime_ns, pointer.stat().st_mtime_ns) == written
    clock.now += RECENCY_SECONDS * 0.1
    assert store.cached_variant("src/640w") == VARIANT
    assert store.cached_pointer("p") == POINTER
    assert variant.stat().st_mtime_ns > written[0]
    assert pointer.stat().st_mtime_ns > written[1]
    forget_files(tmp_path)
    clock.now += RECENCY_SECONDS
    assert store.get_variant("src/640w") is None


def test_the_tier_stays_within_its_byte_bound_least_recently_used_first(tmp_path: Path) -> None:
    store = TieredStore(FilesystemStore(tmp_path), max_bytes=10_000)
    for n in range(30):
        store.put_variant(f"src/{n}w", VARIANT)
        assert store.get_variant("src/0w") == VARIANT  # read, so the most recently used
        assert 0 < store.tier_bytes <= 10_000
    kept = [n for n in range(30) if held(store, f"src/{n}w")]
    assert 0 in kept
    assert 2 < len(kept) < 10
    assert kept[1:] == list(range(30 - len(kept) + 1, 30))  # the newest, oldest evicted first
    assert store.get_variant("src/1w") == VARIANT  # still in the folder


def test_a_record_larger_than_the_tier_is_only_in_the_folder(tmp_path: Path) -> None:
    store = TieredStore(FilesystemStore(tmp_path), max_bytes=500)
    store.put_variant("src/640w", VARIANT)
    assert not held(store, "src/640w")
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

    monkeypatch.setattr(folder, "write_pointer", fails)
    with pytest.raises(OSError):
        store.put_pointer("p", REFRESHED)
    assert store.tier_bytes == 0  # the folder may hold either: ask it next time
    assert store.cached_pointer("p") == POINTER


def test_a_slow_read_never_overwrites_a_write_made_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = FilesystemStore(tmp_path)
    folder.put_pointer("p", POINTER)
    store = TieredStore(folder)
    read = folder.read_pointer

    def read_then_overtaken(key: str, **kwargs: Any) -> Any:
        old = read(key, **kwargs)
        store.put_pointer(key, REFRESHED)  # another request's write lands during the read
        return old

    monkeypatch.setattr(folder, "read_pointer", read_then_overtaken)
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
    forget_files(root, ("variants",))  # the pointer is still there: its stat says unchanged
    again = app.get("url=%2Ftest.jpg&w=640&q=75")
    assert again.headers["x-nextjs-cache"] == "HIT"
    assert again.content == first.content


def test_the_app_serves_a_pointer_another_worker_refreshed_at_once(
    make_app: MakeApp, tmp_path: Path
) -> None:
    root = tmp_path / "cache"
    app = make_app(store=TieredStore(FilesystemStore(root)))
    first = app.get("url=%2Ftest.jpg&w=640&q=75")
    assert first.headers["cache-control"] == "public, max-age=14400, must-revalidate"
    assert app.get("url=%2Ftest.jpg&w=640&q=75").headers["x-nextjs-cache"] == "HIT"
    theirs = FilesystemStore(root)  # another worker revalidated it: a longer max-age now
    key = pointer_key("/test.jpg")
    pointer = theirs.get_pointer(key)
    assert pointer is not None
    theirs.put_pointer(key, replace(pointer, max_age=86400, expire_at=pointer.expire_at + 72000))
    again = app.get("url=%2Ftest.jpg&w=640&q=75")  # no clock moved
    assert again.headers["x-nextjs-cache"] == "HIT"
    assert again.headers["cache-control"] == "public, max-age=86400, must-revalidate"


def test_a_hit_at_hand_takes_no_thread_and_no_timer(
    make_app: MakeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Coordinator.serve``'s first look-up: records in memory or the page cache, no await."""
    app = make_app(store=TieredStore(FilesystemStore(tmp_path / "cache")))
    assert app.get("url=%2Ftest.jpg&w=640&q=75").headers["x-nextjs-cache"] == "MISS"
    timers: list[float] = []
    fail_after = anyio.fail_after

    def counted(delay: float | None, *args: Any, **kwargs: Any) -> Any:
        timers.append(delay or 0.0)
        return fail_after(delay, *args, **kwargs)

    monkeypatch.setattr(anyio, "fail_after", counted)
    threads = counting_threads(monkeypatch)
    assert app.get("url=%2Ftest.jpg&w=640&q=75").headers["x-nextjs-cache"] == "HIT"
    assert (timers, threads) == ([], [])
    assert app.get("url=%2Ftest.jpg&w=750&q=75").headers["x-nextjs-cache"] == "MISS"
    assert timers  # a miss runs under the request's deadline, as before


def test_the_tier_touches_a_file_no_more_than_once_per_recency_interval(tmp_path: Path) -> None:
    """Each touch is a write of the file's inode: a tier that cycles through more variants
    than it holds would otherwise write one per hit."""
    store = TieredStore(FilesystemStore(tmp_path), max_bytes=3_000)  # about one variant
    store.put_variant("src/640w", VARIANT)
    store.put_variant("src/750w", VARIANT)  # the first is no longer held
    path = tmp_path / "variants" / "src" / "640w"
    written = path.stat().st_mtime_ns
    assert not held(store, "src/640w")
    assert store.cached_variant("src/640w") == VARIANT  # read from the folder again
    assert path.stat().st_mtime_ns == written  # touched less than RECENCY_SECONDS ago
    aged = written - int(RECENCY_SECONDS * 10**9)
    os.utime(path, ns=(aged, aged))
    store.put_variant("src/750w", VARIANT)
    assert store.cached_variant("src/640w") == VARIANT
    assert path.stat().st_mtime_ns > written  # now it is


def test_variants_cycling_through_the_tier_leave_its_pointers_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More variants asked for than the tier holds: each is read from the folder, but their
    pointers stay held, so a hit costs one file read, not two."""
    folder = FilesystemStore(tmp_path)
    store = TieredStore(folder, max_bytes=40_000)  # 30 variants are about 51 KB
    for n in range(8):
        store.put_pointer(f"p{n}", POINTER)
    for n in range(30):
        store.put_variant(f"src/{n}w", VARIANT)
    monkeypatch.setattr(folder, "read_pointer", None)  # a pointer read would fail
    assert [store.cached_pointer(f"p{n}") for n in range(8)] == [POINTER] * 8
    assert 0 < store.tier_bytes <= 40_000
