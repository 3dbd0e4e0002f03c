"""A directory store for local serving: survives restarts, atomic writes, bounded size (LRU)."""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from handler.stores.base import Pointer, Variant
from handler.stores.records import decode_pointer, decode_variant, encode_pointer, encode_variant

_TMP_SUFFIX = ".tmp"


class FilesystemStore:
    """Records are files under ``root``; the least recently used are evicted past ``max_bytes``.

    The bound is on what ``du`` reports for ``root``: each file counts its allocated blocks and
    every folder (the root, ``pointers/``, ``variants/`` and one per source) counts too. A folder
    is removed when eviction empties it.

    Each write goes to a temporary file that is renamed into place, so a crash leaves either the
    old record or the new one, never a torn file; leftover temporaries and empty folders are swept
    at start-up.
    """

    def __init__(self, root: str | Path, max_bytes: int = 1_000_000_000) -> None:
        self._root = Path(root)
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._files: OrderedDict[str, int] = OrderedDict()  # LRU order
        self._folders: dict[str, int] = {}  # "" is the root
        self._total = 0
        self._root.mkdir(parents=True, exist_ok=True)
        self._block = os.statvfs(self._root).f_frsize
        self._load_index()

    def get_pointer(self, key: str) -> Pointer | None:
        data = self._read(f"pointers/{key}")
        return decode_pointer(data) if data is not None else None

    def put_pointer(self, key: str, pointer: Pointer) -> None:
        self._write(f"pointers/{key}", encode_pointer(pointer))

    def get_variant(self, key: str) -> Variant | None:
        data = self._read(f"variants/{key}")
        return decode_variant(data) if data is not None else None

    def put_variant(self, key: str, variant: Variant) -> None:
        self._write(f"variants/{key}", encode_variant(variant))

    def ping(self) -> None:
        """Ready while the folder exists and is writable (a volume can vanish or go read-only)."""
        if not os.access(self._root, os.W_OK | os.X_OK):
            raise OSError(f"{self._root} is not a writable folder")

    @property
    def total_bytes(self) -> int:
        """The accounted size of ``root``, files and folders: what the bound applies to."""
        return self._total

    def _whole_blocks(self, size: int) -> int:
        return -(-size // self._block) * self._block

    def _disk_bytes(self, stat: os.stat_result) -> int:
        """At least what ``du -b`` (the size) and ``du`` (allocated blocks) count for an entry."""
        return max(self._whole_blocks(stat.st_size), stat.st_blocks * 512)

    def _load_index(self) -> None:
        """Index what a previous run left, accounted as writes are; sweep its debris."""
        found: list[tuple[float, str, int]] = []
        for folder, _, names in os.walk(self._root, topdown=False):  # children before parents
            rel_folder = Path(folder).relative_to(self._root).as_posix()
            rel_folder = "" if rel_folder == "." else rel_folder
            for name in names:
                path = os.path.join(folder, name)
                if name.endswith(_TMP_SUFFIX):  # a write that a crash interrupted
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    continue
                stat = os.lstat(path)
                rel = posixpath.join(rel_folder, name)
                found.append((stat.st_mtime, rel, self._disk_bytes(stat)))
            if rel_folder:
                with contextlib.suppress(OSError):  # ENOTEMPTY: a folder in use stays
                    os.rmdir(folder)
                    continue
            self._folders[rel_folder] = self._disk_bytes(os.stat(folder))
        for _, rel, size in sorted(found):
            self._files[rel] = size
        self._total = sum(self._files.values()) + sum(self._folders.values())
        self._evict()

    def _read(self, rel: str) -> bytes | None:
        path = self._root / rel
        try:
            data = path.read_bytes()
        except OSError:
            return None
        with self._lock:
            if rel in self._files:
                self._files.move_to_end(rel)
        with contextlib.suppress(OSError):
            os.utime(path)  # so the LRU order survives a restart
        return data

    def _write(self, rel: str, data: bytes) -> None:
        if self._whole_blocks(len(data)) > self._max_bytes:
            return
        path = self._root / rel
        with self._lock:  # eviction removes empty folders under this lock, never in between
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=_TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                size = self._disk_bytes(os.fstat(f.fileno()))
            with self._lock:  # so eviction never unlinks a record it has not accounted
                os.replace(tmp, path)
                self._total += size - self._files.pop(rel, 0)
                self._files[rel] = size
                self._restat_folders(posixpath.dirname(rel))
                self._evict()
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _restat_folders(self, rel_folder: str) -> None:
        """Re-account ``rel_folder`` and its parents: a folder grows with its entries."""
        while True:
            old = self._folders.pop(rel_folder, 0)
            with contextlib.suppress(FileNotFoundError):
                self._folders[rel_folder] = self._disk_bytes(os.stat(self._root / rel_folder))
            self._total += self._folders.get(rel_folder, 0) - old
            if not rel_folder:
                return
            rel_folder = posixpath.dirname(rel_folder)

    def _evict(self) -> None:
        while self._total > self._max_bytes and self._files:
            rel, size = self._files.popitem(last=False)
            self._total -= size
            (self._root / rel).unlink(missing_ok=True)
            self._remove_empty_folders(posixpath.dirname(rel))

    def _remove_empty_folders(self, rel_folder: str) -> None:
        """Remove ``rel_folder`` and its parents while they are empty, then re-account the rest."""
        while rel_folder:
            try:
                os.rmdir(self._root / rel_folder)
            except OSError:  # ENOTEMPTY: another record, or a writer's temporary, is in it
                break
            self._total -= self._folders.pop(rel_folder, 0)
            rel_folder = posixpath.dirname(rel_folder)
        self._restat_folders(rel_folder)
