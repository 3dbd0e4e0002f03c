"""A directory store for local serving: survives restarts, atomic writes, bounded size (LRU)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from handler.stores.base import Pointer, Variant
from handler.stores.records import decode_pointer, decode_variant, encode_pointer, encode_variant

_TMP_SUFFIX = ".tmp"


class FilesystemStore:
    """Records are files under ``root``; the least recently used are evicted past ``max_bytes``.

    Each write goes to a temporary file that is renamed into place, so a crash leaves either the
    old record or the new one, never a torn file; leftover temporaries are swept at start-up.
    """

    def __init__(self, root: str | Path, max_bytes: int = 1_000_000_000) -> None:
        self._root = Path(root)
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._total = 0
        self._root.mkdir(parents=True, exist_ok=True)
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

    @property
    def total_bytes(self) -> int:
        return self._total

    def _load_index(self) -> None:
        found: list[tuple[float, str, int]] = []
        for path in self._root.rglob("*"):
            if not path.is_file():
                continue
            if path.name.endswith(_TMP_SUFFIX):
                path.unlink(missing_ok=True)
                continue
            stat = path.stat()
            found.append((stat.st_mtime, path.relative_to(self._root).as_posix(), stat.st_size))
        for _, rel, size in sorted(found):
            self._sizes[rel] = size
            self._total += size
        self._evict()

    def _read(self, rel: str) -> bytes | None:
        path = self._root / rel
        try:
            data = path.read_bytes()
        except OSError:
            return None
        with self._lock:
            if rel in self._sizes:
                self._sizes.move_to_end(rel)
        with contextlib.suppress(OSError):
            os.utime(path)  # so the LRU order survives a restart
        return data

    def _write(self, rel: str, data: bytes) -> None:
        if len(data) > self._max_bytes:
            return
        path = self._root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=_TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        with self._lock:
            self._total += len(data) - self._sizes.pop(rel, 0)
            self._sizes[rel] = len(data)
            self._evict()

    def _evict(self) -> None:
        while self._total > self._max_bytes and self._sizes:
            rel, size = self._sizes.popitem(last=False)
            self._total -= size
            (self._root / rel).unlink(missing_ok=True)
