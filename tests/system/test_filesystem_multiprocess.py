"""Two processes on one filesystem-store folder, as the workers of ``serve --workers 2`` are.

Each process writes and reads records while the other does, evicting and removing folders the
other may be about to write into, and reopens its store now and then (a replaced worker's
start-up sweep runs while the other writes). Records are derived from their keys
(``kit.store_records.keyed_variant``), so every read is checked byte for byte.
"""

from __future__ import annotations

import multiprocessing
import random
import time
import traceback
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from handler.stores.filesystem import FilesystemStore
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

BOUND = 300_000  # about fifteen records of 0.5-33 KB: eviction on nearly every write
KEYS = 160  # forty source folders of four variants, and a pointer each
SECONDS = 2.0  # at least, and until both processes have read a record the other wrote
HANG_SECONDS = 60.0
REOPEN_EVERY = 150  # operations


def churn(
    root: str,
    seed: int,
    start: Barrier,
    done: Barrier,
    saw_other: Any,
    results: Queue[Any],
) -> None:
    """Write this process's half of the keys, read any key, and report what it saw.

    It goes on for ``SECONDS`` and then until both have read a record of the other's (one slowed
    down by a loaded machine still churns beside the other); only a hang reaches HANG_SECONDS.
    """
    report: dict[str, Any] = {"writes": 0, "hits": 0, "hits_of_other": 0, "over_bound": 0}
    try:
        rng = random.Random(seed)
        store = FilesystemStore(root, BOUND)
        start.wait(timeout=HANG_SECONDS)
        started = time.monotonic()
        while time.monotonic() < started + SECONDS or not all(e.is_set() for e in saw_other):
            assert time.monotonic() < started + HANG_SECONDS, "never read the other's records"
            n = rng.randrange(seed, KEYS, 2)  # even keys for one process, odd for the other
            vkey, pkey = source_variant_key(n), url_pointer_key(n)
            store.put_variant(vkey, keyed_variant(vkey))
            store.put_pointer(pkey, keyed_pointer(pkey))
            report["writes"] += 2
            report["over_bound"] += store.total_bytes > BOUND
            m = rng.randrange(KEYS)
            vkey, pkey = source_variant_key(m), url_pointer_key(m)
            read_variant, read_pointer = store.get_variant(vkey), store.get_pointer(pkey)
            assert read_variant in (None, keyed_variant(vkey)), vkey
            assert read_pointer in (None, keyed_pointer(pkey)), pkey
            hits = (read_variant is not None) + (read_pointer is not None)
            report["hits"] += hits
            report["hits_of_other"] += hits if m % 2 != seed else 0
            if report["hits_of_other"]:
                saw_other[seed].set()
            if report["writes"] % (2 * REOPEN_EVERY) == 0:
                store = FilesystemStore(root, BOUND)
        done.wait(timeout=HANG_SECONDS)  # both stopped writing: the shared total is final
        report["total_bytes"] = store.total_bytes
    except BaseException:
        report["error"] = traceback.format_exc()
    results.put(report)


def test_two_processes_share_one_folder_within_the_bound(tmp_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")  # as uvicorn starts its workers
    start, done = spawn.Barrier(2), spawn.Barrier(2)
    saw_other = [spawn.Event(), spawn.Event()]
    results: Queue[Any] = spawn.Queue()
    processes = [
        spawn.Process(target=churn, args=(str(tmp_path), seed, start, done, saw_other, results))
        for seed in (0, 1)
    ]
    for process in processes:
        process.start()
    try:
        reports = [results.get(timeout=2 * HANG_SECONDS) for _ in processes]
        for process in processes:
            process.join(timeout=HANG_SECONDS)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
    for report in reports:
        assert "error" not in report, report["error"]
        assert report["writes"] > 0  # each process wrote (how many is the machine's speed)
        assert report["hits_of_other"] > 0  # and read records the other wrote
        assert report["over_bound"] == 0  # the bound held after every write
    assert du_allocated(tmp_path) <= BOUND
    assert du_apparent(tmp_path) <= BOUND
    assert temporaries(tmp_path) == []
    assert empty_folders(tmp_path) == []
    # Both processes' running total is exactly what is on disk, and a fresh scan agrees.
    assert [report["total_bytes"] for report in reports] == [on_disk(tmp_path)] * 2
    assert FilesystemStore(tmp_path, BOUND).total_bytes == on_disk(tmp_path)
    store = FilesystemStore(tmp_path, BOUND)
    for path in (tmp_path / "variants").rglob("*"):
        if path.is_file():
            key = path.relative_to(tmp_path / "variants").as_posix()
            assert store.get_variant(key) == keyed_variant(key)
    for path in (tmp_path / "pointers").iterdir():
        assert store.get_pointer(path.name) == keyed_pointer(path.name)


def hold_lock(root: str, key: str, held: Any, release: Any) -> None:
    store = FilesystemStore(root)
    assert store.try_lock(key, 60_000) is not None
    held.set()
    release.wait(HANG_SECONDS)  # then exit without unlocking, as a worker that dies does


def test_workers_on_one_folder_lead_a_miss_one_at_a_time(tmp_path: Path) -> None:
    from handler.stores.base import Locking

    store = FilesystemStore(tmp_path)
    assert isinstance(store, Locking)
    context = multiprocessing.get_context("spawn")
    held, release = context.Event(), context.Event()
    other = context.Process(target=hold_lock, args=(str(tmp_path), "miss-a", held, release))
    other.start()
    try:
        assert held.wait(HANG_SECONDS)
        assert store.try_lock("miss-a", 60_000) is None  # the other worker leads it
        token = store.try_lock("miss-b", 60_000)  # another miss is free
        assert token is not None
        store.unlock("miss-b", token)
        release.set()
        other.join(HANG_SECONDS)
        assert other.exitcode == 0
        token = store.try_lock("miss-a", 60_000)  # its process ended: the kernel released it
        assert token is not None
        store.unlock("miss-a", token)
    finally:
        release.set()
        other.join(HANG_SECONDS)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locks", ".usage"]  # nothing grew
