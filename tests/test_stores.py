"""Memory and filesystem stores: round trips, bounds, restarts, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from handler.stores.base import Pointer, Store, Variant
from handler.stores.filesystem import FilesystemStore
from handler.stores.memory import MemoryStore

POINTER = Pointer("ab" * 32, "etag", 'W/"1-2"', 14400, 1_800_000_000.0)


def variant(size: int, fill: bytes = b"x") -> Variant:
    return Variant(fill * size, "image/webp", "etag-" + str(size), "optimized")


@pytest.fixture(params=["memory", "filesystem"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return MemoryStore(max_bytes=10_000)
    return FilesystemStore(tmp_path / "cache", max_bytes=10_000)


def test_round_trip(store: Store) -> None:
    assert store.get_pointer("p") is None
    assert store.get_variant("src/640w-75q-webp-p1") is None
    store.put_pointer("p", POINTER)
    store.put_variant("src/640w-75q-webp-p1", variant(100))
    assert store.get_pointer("p") == POINTER
    assert store.get_variant("src/640w-75q-webp-p1") == variant(100)


def test_bounded_size_evicts_least_recently_used(store: Store) -> None:
    for name in ("a", "b", "c"):
        store.put_variant(name, variant(3000))
    assert store.get_variant("a") is not None  # a is now the most recently used
    store.put_variant("d", variant(3000))
    assert store.get_variant("b") is None
    assert store.get_variant("a") is not None
    assert store.get_variant("d") is not None


def test_entry_larger_than_the_bound_is_not_stored(store: Store) -> None:
    store.put_variant("huge", variant(20_000))
    assert store.get_variant("huge") is None


def test_filesystem_store_survives_restart(tmp_path: Path) -> None:
    FilesystemStore(tmp_path).put_variant("k/v", variant(50))
    FilesystemStore(tmp_path).put_pointer("p", POINTER)
    reopened = FilesystemStore(tmp_path)
    assert reopened.get_variant("k/v") == variant(50)
    assert reopened.get_pointer("p") == POINTER
    assert reopened.total_bytes > 50


def test_filesystem_restart_keeps_the_bound_and_lru_order(tmp_path: Path) -> None:
    first = FilesystemStore(tmp_path, max_bytes=100_000)
    for i, name in enumerate(("old", "mid", "new")):
        first.put_variant(name, variant(3000))
        path = tmp_path / "variants" / name
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    reopened = FilesystemStore(tmp_path, max_bytes=7000)  # a smaller bound on restart
    assert reopened.get_variant("old") is None
    assert reopened.get_variant("new") is not None
    assert reopened.total_bytes <= 7000


def test_filesystem_sweeps_torn_temporaries_and_ignores_garbage(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    store.put_variant("k", variant(10))
    torn = tmp_path / "variants" / ".k123.tmp"
    torn.write_bytes(b'{"content_type":')  # a crash mid-write leaves only a temporary
    (tmp_path / "variants" / "bad").write_bytes(b"not a record")
    (tmp_path / "pointers").mkdir(exist_ok=True)
    (tmp_path / "pointers" / "bad").write_bytes(b"{")
    reopened = FilesystemStore(tmp_path)
    assert not torn.exists()
    assert reopened.get_variant("k") == variant(10)
    assert reopened.get_variant("bad") is None
    assert reopened.get_pointer("bad") is None


def test_filesystem_write_is_atomic_replace(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    store.put_variant("k", variant(10, b"a"))
    store.put_variant("k", variant(10, b"b"))
    assert store.get_variant("k") == variant(10, b"b")
    leftovers = [p.name for p in (tmp_path / "variants").iterdir()]
    assert leftovers == ["k"]
