"""Every store's contract (memory, filesystem, S3 on moto, Redis), then the bounded local stores
(memory and filesystem): bounds, restarts, atomic writes, crashes.

Run as a script (``python tests/contract/test_stores.py FOLDER BOUND SEED``, with ``tests`` on
``PYTHONPATH`` for the kit), this file is the writer that the crash test kills mid-write.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from handler.commands.invoke import mocked_s3
from handler.entry.settings import Settings
from handler.model import Pointer, Variant
from handler.stores.base import Store
from handler.stores.filesystem import FilesystemStore
from handler.stores.memory import MemoryStore
from handler.stores.redis import RedisStore
from handler.stores.s3 import S3Store
from handler.stores.tiered import TieredStore
from kit.paths import REPO
from kit.store_records import (
    du_allocated,
    du_apparent,
    empty_folders,
    keyed_pointer,
    keyed_variant,
    on_disk,
    source_variant_key,
    temporaries,
    url_pointer_key,
)

POINTER = Pointer("ab" * 32, "etag", 'W/"1-2"', 14400, 1_800_000_000.0)

AnyStore = MemoryStore | FilesystemStore
MakeStore = Callable[[int], AnyStore]


def variant(size: int, fill: bytes = b"x") -> Variant:
    return Variant(fill * size, "image/webp", "etag-" + str(size), "optimized")


def room_for(make_store: MakeStore, fill: Callable[[AnyStore], object]) -> int:
    """The accounted size of exactly what ``fill`` writes into an empty, unbounded store."""
    probe = make_store(10**9)
    fill(probe)
    return probe.total_bytes


RecordKind = Literal["pointer", "variant"]


@dataclass
class StoreUnderTest:
    store: Store
    # Puts raw bytes where the store keeps a record; None for a store of objects, not bytes.
    write_raw: Callable[[RecordKind, str, bytes], None] | None


@pytest.fixture(params=["memory", "filesystem", "tiered", "s3", "redis"])
def contract(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUnderTest]:
    """An empty store of each kind, with a way to plant what another writer could have left."""
    if request.param == "memory":
        yield StoreUnderTest(MemoryStore(), None)
    elif request.param in ("filesystem", "tiered"):

        def write_file(kind: RecordKind, key: str, data: bytes) -> None:
            path = tmp_path / f"{kind}s" / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        folder = FilesystemStore(tmp_path)
        tiered = request.param == "tiered"
        yield StoreUnderTest(TieredStore(folder) if tiered else folder, write_file)
    elif request.param == "s3":
        with mocked_s3(Settings(bucket="variants")) as client:
            s3 = S3Store("variants", "site/")

            def write_object(kind: RecordKind, key: str, data: bytes) -> None:
                name = {"pointer": s3.pointer_object_key, "variant": s3.variant_object_key}[kind]
                client.put_object(Bucket="variants", Key=name(key), Body=data)

            yield StoreUnderTest(s3, write_object)
    else:
        url = request.getfixturevalue("redis_url")
        redis = RedisStore(url, f"test-{uuid.uuid4().hex}/")

        def write_value(kind: RecordKind, key: str, data: bytes) -> None:
            name = {"pointer": redis.pointer_redis_key, "variant": redis.variant_redis_key}[kind]
            redis.client.set(name(key), data, ex=60)

        yield StoreUnderTest(redis, write_value)


def test_round_trip(contract: StoreUnderTest) -> None:
    store = contract.store
    store.ping()
    assert store.get_pointer("p") is None
    assert store.get_variant("src/640w-75q-webp-p1") is None
    store.put_pointer("p", POINTER)
    store.put_variant("src/640w-75q-webp-p1", variant(100))
    assert store.get_pointer("p") == POINTER
    assert store.get_variant("src/640w-75q-webp-p1") == variant(100)


def test_pointers_and_variants_are_apart_and_missing_keys_are_misses(
    contract: StoreUnderTest,
) -> None:
    store = contract.store
    store.put_pointer("k", POINTER)
    store.put_variant("src/k", variant(10))
    assert store.get_variant("k") is None
    assert store.get_pointer("src/k") is None
    assert store.get_pointer("other") is None
    assert store.get_variant("src/other") is None


def test_a_refreshed_pointer_replaces_the_old_one(contract: StoreUnderTest) -> None:
    store = contract.store
    store.put_pointer("p", POINTER)
    refreshed = Pointer(POINTER.source_hash, "etag2", None, 60, POINTER.expire_at + 60)
    store.put_pointer("p", refreshed)
    assert store.get_pointer("p") == refreshed


def test_an_expired_pointer_is_still_there_to_revalidate(contract: StoreUnderTest) -> None:
    """Expiry is the optimizer's business (STALE, then a conditional request with the upstream
    ETag): a store returns a pointer past its ``expire_at`` like any other."""
    expired = Pointer("cd" * 32, "etag", '"v1"', 60, time.time() - 3600)
    contract.store.put_pointer("old", expired)
    assert contract.store.get_pointer("old") == expired


def test_variants_round_trip_byte_exact_with_their_metadata(contract: StoreUnderTest) -> None:
    store = contract.store
    records = {
        "src/640w-75q-webp-p1": Variant(bytes(range(256)) * 4, "image/webp", "e1", "optimized"),
        "src/640w-75q-auto-p1": Variant(b"\n\r\n<svg/>\n", "image/svg+xml", "e2", "original"),
        "src/1w-1q-png-p1": Variant(b"\x89PNG\r\n\x1a\n", "image/png", "e3", "fallback"),
    }
    for key, record in records.items():
        store.put_variant(key, record)
    for key, record in records.items():
        assert store.get_variant(key) == record


def test_sources_round_trip_byte_exact_under_their_hash(contract: StoreUnderTest) -> None:
    store = contract.store
    body = bytes(range(256)) * 4 + b"\n\r\n"
    key = hashlib.sha256(body).hexdigest()
    assert store.get_source(key) is None
    store.put_source(key, body)
    assert store.get_source(key) == body
    store.put_source(key, body)  # content-addressed: a second writer's copy is the same bytes
    assert store.get_source(key) == body


def test_sources_are_apart_from_pointers_and_variants(contract: StoreUnderTest) -> None:
    store = contract.store
    store.put_pointer("k", POINTER)
    store.put_variant("k", variant(10))
    assert store.get_source("k") is None
    store.put_source("s", b"source bytes")
    assert store.get_pointer("s") is None
    assert store.get_variant("s") is None
    assert store.get_source("k") is None


@pytest.mark.parametrize("contract", ["filesystem", "tiered", "s3", "redis"], indirect=True)
@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"not a record", b'{"source_hash": 1}', b"{}\nbody", b'{"kind":"optimized"}\n'],
)
def test_garbage_records_are_misses(contract: StoreUnderTest, raw: bytes) -> None:
    """Whatever another writer left at a key, a store reads a miss, never an error."""
    assert contract.write_raw is not None
    contract.write_raw("pointer", "bad", raw)
    contract.write_raw("variant", "src/bad", raw)
    assert contract.store.get_pointer("bad") is None
    assert contract.store.get_variant("src/bad") is None


@pytest.fixture(params=["memory", "filesystem"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    """Makes stores of one kind with a given bound, each filesystem one in a folder of its own."""
    folders = (tmp_path / f"cache-{i}" for i in itertools.count())

    def make(max_bytes: int) -> AnyStore:
        if request.param == "memory":
            return MemoryStore(max_bytes)
        return FilesystemStore(next(folders), max_bytes)

    return make


def test_bounded_size_evicts_least_recently_used(make_store: MakeStore) -> None:
    def three(store: AnyStore) -> None:
        for name in ("a", "b", "c"):
            store.put_variant(name, variant(3000))

    store = make_store(room_for(make_store, three))
    three(store)
    assert store.get_variant("a") is not None  # a is now the most recently used
    store.put_variant("d", variant(3000))
    assert store.get_variant("b") is None
    assert store.get_variant("a") is not None
    assert store.get_variant("d") is not None


def test_entry_larger_than_the_bound_is_not_stored(make_store: MakeStore) -> None:
    store = make_store(10_000)
    store.put_variant("huge", variant(20_000))
    assert store.get_variant("huge") is None
    assert store.total_bytes <= 10_000


def test_pointers_count_toward_the_bound_and_the_least_recently_used_go_first(
    make_store: MakeStore,
) -> None:
    def twenty(store: AnyStore) -> None:
        for n in range(20):
            store.put_pointer(url_pointer_key(n), POINTER)

    bound = room_for(make_store, twenty)
    store = make_store(bound)
    store.put_variant("v", variant(100))
    store.put_pointer("kept", POINTER)
    for n in range(200):  # ten times what fits, one distinct URL each
        store.put_pointer(url_pointer_key(n), POINTER)
        assert store.get_pointer("kept") == POINTER  # read, so the most recently used
        assert store.total_bytes <= bound
    present = [store.get_pointer(url_pointer_key(n)) is not None for n in range(200)]
    assert 0 < sum(present) < 20
    assert present == sorted(present)  # only the newest survive, oldest evicted first
    assert store.get_variant("v") is None  # a variant is evicted by pointers like any record
    assert store.get_pointer("kept") == POINTER


def test_a_huge_upstream_etag_is_charged(make_store: MakeStore) -> None:
    store = make_store(50_000)
    store.put_pointer("hostile", Pointer("ab" * 32, "e", "W/" + "x" * 60_000, 60, 0.0))
    assert store.get_pointer("hostile") is None
    assert store.total_bytes <= 50_000


def test_concurrent_use_keeps_the_accounting_exact(make_store: MakeStore) -> None:
    """Threads write, read and evict at once; then one record that needs the whole bound must
    leave the total exactly at its own size (no drift), and every read is what was written."""
    big = variant(20_000)
    bound = room_for(make_store, lambda store: store.put_variant("big", big))
    store = make_store(bound)
    errors: list[BaseException] = []

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(60):
                n = rng.randrange(24)
                vkey, pkey = source_variant_key(n), url_pointer_key(n)
                store.put_variant(vkey, keyed_variant(vkey))
                store.put_pointer(pkey, keyed_pointer(pkey))
                m = rng.randrange(24)
                vkey, pkey = source_variant_key(m), url_pointer_key(m)
                assert store.get_variant(vkey) in (None, keyed_variant(vkey))
                assert store.get_pointer(pkey) in (None, keyed_pointer(pkey))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.total_bytes <= bound
    store.put_variant("big", big)
    assert store.total_bytes == bound
    assert store.get_variant("big") == big


def test_filesystem_store_survives_restart(tmp_path: Path) -> None:
    FilesystemStore(tmp_path).put_variant("k/v", variant(50))
    FilesystemStore(tmp_path).put_pointer("p", POINTER)
    reopened = FilesystemStore(tmp_path)
    assert reopened.get_variant("k/v") == variant(50)
    assert reopened.get_pointer("p") == POINTER
    assert reopened.total_bytes == on_disk(tmp_path)


def test_filesystem_restart_keeps_the_bound_and_lru_order(tmp_path: Path) -> None:
    first = FilesystemStore(tmp_path, max_bytes=1_000_000)
    for i, name in enumerate(("old", "mid", "new")):
        first.put_variant(name, variant(3000))
        path = tmp_path / "variants" / name
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    bound = first.total_bytes - 1  # a smaller bound on restart: one record must go
    reopened = FilesystemStore(tmp_path, max_bytes=bound)
    assert reopened.get_variant("old") is None
    assert reopened.get_variant("mid") is not None
    assert reopened.get_variant("new") is not None
    assert reopened.total_bytes <= bound


def test_filesystem_du_stays_within_the_bound_and_leaves_no_empty_folders(tmp_path: Path) -> None:
    bound = 200_000
    store = FilesystemStore(tmp_path, max_bytes=bound)
    for n in range(120):  # thirty sources, four widths each, and a pointer per URL
        vkey, pkey = source_variant_key(n), url_pointer_key(n)
        store.put_variant(vkey, keyed_variant(vkey))
        store.put_pointer(pkey, keyed_pointer(pkey))
    sources = list((tmp_path / "variants").iterdir())
    assert 0 < len(sources) < 30  # eviction ran and removed folders along the way
    assert du_allocated(tmp_path) <= bound
    assert du_apparent(tmp_path) <= bound
    assert store.total_bytes == on_disk(tmp_path)
    assert empty_folders(tmp_path) == []
    assert FilesystemStore(tmp_path, max_bytes=bound).total_bytes == store.total_bytes


def test_filesystem_startup_sweeps_temporaries_and_empty_folders(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    store.put_variant("src/640w", variant(10))
    accounted = store.total_bytes
    (tmp_path / "variants" / "gone" / "deeper").mkdir(parents=True)  # eviction then a crash
    torn = tmp_path / "variants" / "torn" / ".640w123.tmp"
    torn.parent.mkdir()
    torn.write_bytes(b'{"content_type":')  # a crash mid-write leaves only a temporary
    reopened = FilesystemStore(tmp_path)
    assert sorted(p.name for p in (tmp_path / "variants").iterdir()) == ["src"]
    assert reopened.total_bytes == accounted == on_disk(tmp_path)
    assert reopened.get_variant("src/640w") == variant(10)


def test_filesystem_write_is_atomic_replace(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    store.put_variant("k", variant(10, b"a"))
    store.put_variant("k", variant(10, b"b"))
    assert store.get_variant("k") == variant(10, b"b")
    leftovers = [p.name for p in (tmp_path / "variants").iterdir()]
    assert leftovers == ["k"]


def write_until_killed(folder: str, bound: int, seed: int) -> None:
    """The crash test's writer: records derived from their keys, in a tight loop, forever."""
    store = FilesystemStore(folder, bound)
    rng = random.Random(seed)
    print("ready", flush=True)
    while True:
        n = rng.randrange(600)
        vkey, pkey = source_variant_key(n), url_pointer_key(n)
        store.put_variant(vkey, keyed_variant(vkey))
        store.put_pointer(pkey, keyed_pointer(pkey))


def assert_intact_after_restart(root: Path, bound: int) -> None:
    """A fresh store on ``root`` sweeps the debris, reads every record back exactly as it was
    written, and accounts exactly what is on disk."""
    store = FilesystemStore(root, bound)
    assert temporaries(root) == []
    assert empty_folders(root) == []
    variants = [p for p in (root / "variants").rglob("*") if p.is_file()]
    pointers = list((root / "pointers").iterdir())
    assert variants
    assert pointers
    for path in variants:
        key = path.relative_to(root / "variants").as_posix()
        assert store.get_variant(key) == keyed_variant(key)
    for path in pointers:
        assert store.get_pointer(path.name) == keyed_pointer(path.name)
    assert store.total_bytes == on_disk(root)
    assert store.total_bytes <= bound


def test_filesystem_survives_kill_9_mid_write(tmp_path: Path) -> None:
    bound = 1_000_000  # small enough that evictions (and folder removals) are killed too
    rng = random.Random()
    torn = 0  # kills that left a temporary behind: about half of them
    for attempt in range(12):
        with subprocess.Popen(
            [sys.executable, __file__, str(tmp_path), str(bound), str(rng.randrange(2**32))],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])},
        ) as writer:
            try:
                assert writer.stdout is not None
                ready = writer.stdout.readline()
                time.sleep(rng.uniform(0.1, 0.4))
            finally:  # never leave a writer running, whatever failed
                writer.send_signal(signal.SIGKILL)
        assert ready == b"ready\n"
        assert writer.returncode == -signal.SIGKILL
        torn += bool(temporaries(tmp_path))
        assert_intact_after_restart(tmp_path, bound)
        if attempt >= 3 and torn:
            break
    assert torn, "no kill landed mid-write"


if __name__ == "__main__":
    write_until_killed(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
