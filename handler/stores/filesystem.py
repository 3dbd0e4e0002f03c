"""A directory store for local serving: survives restarts, atomic writes, bounded size (LRU),
shared safely by the workers of ``serve --workers N`` and by any other process on the folder."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import heapq
import os
import posixpath
import struct
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from io import BufferedWriter
from pathlib import Path

from handler.model import Pointer, Variant
from handler.stores.records import decode_pointer, decode_variant, encode_pointer, encode_variant

_TMP_SUFFIX = ".tmp"
_USAGE = ".usage"  # the folder's accounted size, and the lock every process takes to change it
_LOCKS = ".locks"  # one empty file; a miss's lock is one byte of it (a POSIX record lock)
_BOOKKEEPING = frozenset({_USAGE, _LOCKS})
_TOTAL = struct.Struct("<q")
_EVICTION_BATCH = 4096  # the least recently used records of a scan kept as eviction candidates

# A record file's inode, size, mtime and ctime. Every write renames a new file into place (a new
# inode, an mtime set to the nanosecond) and every touch sets the mtime and moves the ctime, so
# the same identity means the same bytes. An inode number freed and reused would also need the
# same size and the same nanosecond mtime to pass for the old file.
Identity = tuple[int, int, int, int]


_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)  # Linux 4.14+


class NotCached(Exception):
    """A read that would wait for the disk, refused (``wait=False``): read it in a thread."""


def _identity(stat: os.stat_result) -> Identity:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _read_all(fd: int, size: int) -> bytes:
    """The whole file, in one ``read`` when its stat's size is right (one byte more is asked
    for, so the end is seen without another call)."""
    chunks = [os.read(fd, size + 1)]
    while len(chunks) > 1 or len(chunks[0]) > size:  # larger than its stat said: read on
        chunk = os.read(fd, 65_536)
        if not chunk:
            break
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _read_cached(fd: int, size: int) -> bytes:
    """The file's first ``size`` bytes from the page cache, or ``NotCached`` (also where
    ``RWF_NOWAIT`` is not supported)."""
    if _NOWAIT is None:
        raise NotCached
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    try:
        while done < size:
            got = os.preadv(fd, [view[done:]], done, _NOWAIT)
            if got == 0:
                break  # shorter than its stat said: what there is
            done += got
    except OSError as exc:  # EAGAIN: not all cached; EOPNOTSUPP: no RWF_NOWAIT here
        raise NotCached from exc
    finally:
        view.release()
    return bytes(buffer[:done]) if done < size else bytes(buffer)


class FilesystemStore:
    """Records are files under ``root``; the least recently used are evicted past ``max_bytes``
    (what ``du`` reports for ``root``: allocated blocks, folders included).

    Each write goes to a temporary file renamed into place, so a crash leaves the old record or
    the new one, never a torn file; start-up sweeps what crashed writers left. The workers of one
    machine share a folder safely because all of its state lives in the folder: the size in
    ``root/.usage`` under an ``flock``, recency in each record's mtime, and reads take no lock
    (docs/architecture.md, "The filesystem store, shared by processes"). Open a store in the
    process that uses it: its ``flock`` belongs to its own open file."""

    def __init__(self, root: str | Path, max_bytes: int = 1_000_000_000) -> None:
        self._root = Path(root)
        self._prefix = os.path.join(os.fspath(root), "")  # for the hit path: no Path objects
        self._max_bytes = max_bytes
        self._lock = threading.Lock()  # this process's threads; the flock orders the processes
        self._candidates: deque[tuple[int, str]] = deque()  # (mtime_ns, record), oldest first
        self._root.mkdir(parents=True, exist_ok=True)
        self._block = os.statvfs(self._root).f_frsize
        self._usage = os.open(self._root / _USAGE, os.O_RDWR | os.O_CREAT, 0o644)
        weakref.finalize(self, os.close, self._usage)
        self._locks = os.open(self._root / _LOCKS, os.O_RDWR | os.O_CREAT, 0o644)
        weakref.finalize(self, os.close, self._locks)
        with self._exclusive():
            if os.fstat(self._usage).st_size < _TOTAL.size:  # a new folder: its size from now on
                os.pwrite(self._usage, _TOTAL.pack(0), 0)
            self._scan()
            self._evict()

    def get_pointer(self, key: str) -> Pointer | None:
        read = self.read_pointer(key)
        return read[0] if read is not None else None

    def put_pointer(self, key: str, pointer: Pointer) -> None:
        self.write_pointer(key, pointer)

    def get_variant(self, key: str) -> Variant | None:
        read = self.read_variant(key)
        return read[0] if read is not None else None

    def put_variant(self, key: str, variant: Variant) -> None:
        self._write(f"variants/{key}", encode_variant(variant))

    def get_source(self, key: str) -> bytes | None:
        read = self._read(f"sources/{key}")
        return read[0] if read is not None else None

    def pointer_identity(self, key: str) -> Identity | None:
        """What any rewrite or read of the pointer's file changes (one ``stat``, no read): its
        inode, size, mtime and ctime. None when there is no such file (or it cannot be read)."""
        try:
            return _identity(os.stat(f"{self._prefix}pointers/{key}"))
        except OSError:
            return None

    def read_pointer(
        self, key: str, *, touch: float | None = 0.0, wait: bool = True
    ) -> tuple[Pointer | None, Identity] | None:
        """The pointer (None if undecodable) and its file's identity after this read; None when
        there is no file. ``touch``: mark it recently used unless it was less than that many
        seconds ago (None: leave it); ``wait=False``: raise ``NotCached`` rather than wait for
        the disk (``_read``)."""
        read = self._read(f"pointers/{key}", touch=touch, wait=wait)
        return (decode_pointer(read[0]), read[1]) if read is not None else None

    def write_pointer(self, key: str, pointer: Pointer) -> Identity | None:
        """Write the pointer; the identity of the file written (None: not kept, too large)."""
        return self._write(f"pointers/{key}", encode_pointer(pointer))

    def read_variant(
        self, key: str, *, touch: float | None = 0.0, wait: bool = True
    ) -> tuple[Variant | None, Identity] | None:
        """As ``read_pointer``, for a variant."""
        read = self._read(f"variants/{key}", touch=touch, wait=wait)
        return (decode_variant(read[0]), read[1]) if read is not None else None

    def put_source(self, key: str, body: bytes) -> None:
        self._write(f"sources/{key}", body)

    def delete_pointers(self, keys: Sequence[str]) -> int:
        """Remove these pointers (``next-image purge``), each under the folder's lock and
        accounted like an eviction; returns how many were there."""
        removed = 0
        for key in keys:
            rel = f"pointers/{key}"
            if "/" in key or key.startswith("."):
                raise ValueError(f"not a pointer key: {key!r}")
            with self._exclusive(), self._accounting(self._with_folders(rel)):
                try:
                    (self._root / rel).unlink()
                except FileNotFoundError:
                    continue
                removed += 1
                self._remove_empty_folders("pointers")
        return removed

    def delete_all_pointers(self) -> int:
        """Every pointer in the folder (writers' temporaries are left to them)."""
        try:
            names = [e.name for e in os.scandir(self._root / "pointers") if e.name[0] != "."]
        except FileNotFoundError:
            return 0
        return self.delete_pointers(names)

    def try_lock(self, key: str, ttl_ms: int) -> str | None:
        """Lead a miss among the processes on this folder (``serve --workers``).

        The lock is a byte of ``.locks`` at an offset drawn from the key, held with ``lockf``:
        the kernel drops it when its process dies, so ``ttl_ms`` is not needed, and the file
        never grows. Locks of one process never exclude each other (the optimizer's in-process
        single-flight covers that).
        """
        offset = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")
        try:
            fcntl.lockf(self._locks, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError:  # EAGAIN/EACCES: another process holds it
            return None
        return str(offset)

    def unlock(self, key: str, token: str) -> None:
        fcntl.lockf(self._locks, fcntl.LOCK_UN, 1, int(token))

    def ping(self) -> None:
        """Ready while the folder exists and is writable (a volume can vanish or go read-only)."""
        if not os.access(self._root, os.W_OK | os.X_OK):
            raise OSError(f"{self._root} is not a writable folder")

    @property
    def total_bytes(self) -> int:
        """The accounted size of ``root``, files and folders: what the bound applies to."""
        with self._exclusive():
            return self._total()

    def _whole_blocks(self, size: int) -> int:
        return -(-size // self._block) * self._block

    def _disk_bytes(self, stat: os.stat_result) -> int:
        """At least what ``du -b`` (the size) and ``du`` (allocated blocks) count for an entry."""
        return max(self._whole_blocks(stat.st_size), stat.st_blocks * 512)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the folder: one thread of one process changes it at a time."""
        with self._lock:
            fcntl.flock(self._usage, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._usage, fcntl.LOCK_UN)

    def _total(self) -> int:
        return int(_TOTAL.unpack(os.pread(self._usage, _TOTAL.size, 0))[0])

    def _set_total(self, total: int) -> None:
        os.pwrite(self._usage, _TOTAL.pack(total), 0)

    @contextlib.contextmanager
    def _accounting(self, entries: list[str]) -> Iterator[None]:
        """Charge what the block changes in these entries (paths under ``root``), measured on disk
        before and after, even if it fails halfway. Under ``_exclusive`` only."""
        before = self._measure(entries)
        try:
            yield
        finally:
            self._set_total(self._total() + self._measure(entries) - before)

    def _measure(self, entries: list[str]) -> int:
        total = 0
        for rel in entries:
            with contextlib.suppress(FileNotFoundError):
                total += self._disk_bytes(os.lstat(self._root / rel))
        return total

    @staticmethod
    def _with_folders(rel: str) -> list[str]:
        """``rel`` and every folder above it, up to the root (``""``)."""
        entries = [rel]
        while rel:
            rel = posixpath.dirname(rel)
            entries.append(rel)
        return entries

    def _scan(self) -> None:
        """Account the folder as it is, keep its least recently used records as eviction
        candidates, and sweep dead writers' temporaries and empty folders. Under ``_exclusive``."""
        total = 0
        records: list[tuple[int, str]] = []
        for folder, _, names in os.walk(self._root, topdown=False):  # children before parents
            rel_folder = Path(folder).relative_to(self._root).as_posix()
            rel_folder = "" if rel_folder == "." else rel_folder
            for name in names:
                rel = posixpath.join(rel_folder, name)
                if name.endswith(_TMP_SUFFIX):
                    self._sweep_temporary(self._root / rel)
                    continue  # a live write is charged when it is renamed into place
                try:
                    stat = os.lstat(self._root / rel)
                except FileNotFoundError:
                    continue
                total += self._disk_bytes(stat)
                if rel not in _BOOKKEEPING:
                    records.append((stat.st_mtime_ns, rel))
            if rel_folder:
                with contextlib.suppress(OSError):  # ENOTEMPTY: a folder in use stays
                    os.rmdir(folder)
                    continue
            total += self._disk_bytes(os.lstat(folder))
        self._set_total(total)
        self._candidates = deque(heapq.nsmallest(_EVICTION_BATCH, records))

    @staticmethod
    def _sweep_temporary(path: Path) -> None:
        """Remove a temporary file unless its writer, alive, still holds its lock."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        finally:
            os.close(fd)  # closing before the unlink is safe: we hold the folder
        path.unlink(missing_ok=True)

    def _read(
        self, rel: str, *, touch: float | None = 0.0, wait: bool = True
    ) -> tuple[bytes, Identity] | None:
        """The whole file and its identity after this read; None when it cannot be opened.

        ``touch``: set its mtime to now, so it is the most recently used for every process,
        unless it was set less than ``touch`` seconds ago (None: leave it). ``wait=False``:
        read only what the page cache holds (``RWF_NOWAIT``), for the event loop, and raise
        ``NotCached`` if that is not the whole file.
        """
        try:
            fd = os.open(self._prefix + rel, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            stat = os.fstat(fd)
            data = _read_all(fd, stat.st_size) if wait else _read_cached(fd, stat.st_size)
            now = time.time_ns()
            if touch is not None and now - stat.st_mtime_ns >= touch * 1e9:
                with contextlib.suppress(OSError):
                    os.utime(fd, ns=(now, now))  # the file read, even if replaced since
                stat = os.fstat(fd)
            return data, _identity(stat)
        except OSError:
            return None
        finally:
            os.close(fd)

    def _write(self, rel: str, data: bytes) -> Identity | None:
        """Write ``data`` at ``rel``; the identity of the file renamed into place (None when
        it is larger than the bound, so not written)."""
        if self._whole_blocks(len(data)) > self._max_bytes:
            return None
        path = self._root / rel
        folders = self._with_folders(posixpath.dirname(rel))
        temporary: BufferedWriter | None = None
        tmp = ""
        try:
            with self._exclusive():  # no rmdir between mkdir and mkstemp
                with self._accounting(folders):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=_TMP_SUFFIX)
                temporary = os.fdopen(fd, "wb")
                fcntl.flock(fd, fcntl.LOCK_EX)  # alive: start-up sweeps leave it alone
                self._evict()  # room for a new folder (the temporary keeps it from eviction)
            with temporary:  # closed, so unlocked, once renamed into place
                temporary.write(data)
                temporary.flush()
                now = time.time_ns()
                os.utime(fd, ns=(now, now))
                os.fsync(fd)
                with self._exclusive():
                    with self._accounting([rel, *folders]):
                        os.replace(tmp, path)
                    written = _identity(os.fstat(fd))  # renamed: its ctime moved on
                    self._evict()
        except BaseException:
            if temporary is not None:
                temporary.close()
                with self._exclusive(), self._accounting(folders):
                    Path(tmp).unlink(missing_ok=True)
            raise
        return written

    def _evict(self) -> None:
        """Remove least recently used records until the folder is within the bound. Under
        ``_exclusive``."""
        rescanned = False
        while self._total() > self._max_bytes:
            if not self._candidates:
                if rescanned:
                    return  # nothing evictable now (all in use): the next write tries again
                self._scan()
                rescanned = True
                continue
            mtime, rel = self._candidates.popleft()
            try:
                if os.lstat(self._root / rel).st_mtime_ns != mtime:
                    continue  # used or rewritten since the scan: no longer the oldest
            except FileNotFoundError:
                continue  # evicted by another process
            with self._accounting(self._with_folders(rel)):
                (self._root / rel).unlink()
                self._remove_empty_folders(posixpath.dirname(rel))

    def _remove_empty_folders(self, rel_folder: str) -> None:
        while rel_folder:
            try:
                os.rmdir(self._root / rel_folder)
            except OSError:  # ENOTEMPTY: another record, or a writer's temporary, is in it
                return
            rel_folder = posixpath.dirname(rel_folder)
