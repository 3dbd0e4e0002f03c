"""A small in-memory tier in front of the filesystem store, so a hot hit costs no thread hop and
no file read.

A hit from the filesystem store alone is two file reads, each on a worker thread: the hop to the
thread and back costs more than the rest of the request. The tier keeps the records this process
read or wrote most recently, bounded in bytes (least recently used evicted first), and the
``GuardedStore`` asks it on the event loop before going to the filesystem in a thread.

What the tier holds is what the filesystem holds:

- Writes go to the filesystem first, then to the tier; a write that fails drops the key from
  the tier, since the filesystem may hold either record now.
- A variant is content-addressed (its key names the source bytes), so a copy of it is never
  wrong. It is still read from the filesystem again after ``variant_ttl``: that read marks it
  recently used there, so the folder's LRU does not evict what this process serves hot, and a
  variant evicted from the folder stops being served here too.
- A pointer is not: another process on the folder (a worker of ``serve --workers N``) can
  refresh it. So a pointer is kept only ``pointer_ttl`` (1 s) after it was read or written here:
  a pointer refreshed by another worker is seen by this one at most that long after. An expired
  pointer already serves STALE and revalidates, so a second of lag only delays which of two
  fresh records answers.
- A record read from the filesystem enters the tier only if the key is not there already: what
  is there was written (or read) after the tier missed, so a slow read never overwrites a
  newer write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from handler.stores.base import Locking, Pointer, Purging, Store, Variant
from handler.stores.lru import Index, RecordLRU

POINTER_TTL = 1.0  # seconds: how stale a pointer refreshed by another process may be here
VARIANT_TTL = 30.0  # seconds between reads of a hot variant from the folder (its LRU recency)

R = TypeVar("R", Pointer, Variant)


class LockingStore(Store, Locking, Purging, Protocol):
    """A store shared by processes, leading misses among them (the filesystem store)."""


class TieredStore:
    """``backing`` behind a byte-bounded LRU of its recent records (see the module docstring).

    Its blocking calls (``get_*``, ``put_*``) run on a thread as any store's; ``cached_pointer``
    and ``cached_variant`` only look at memory, for the event loop.
    """

    def __init__(
        self,
        backing: LockingStore,
        max_bytes: int = 64_000_000,
        *,
        pointer_ttl: float = POINTER_TTL,
        variant_ttl: float = VARIANT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backing = backing
        self._ttl = {"pointer": pointer_ttl, "variant": variant_ttl}
        self._records = RecordLRU(max_bytes, clock)

    @property
    def tier_bytes(self) -> int:
        """The accounted size of what the tier holds: what ``max_bytes`` bounds."""
        return self._records.size

    def cached_pointer(self, key: str) -> Pointer | None:
        """The tier's copy, if fresh; never blocks (for the event loop)."""
        record = self._records.get(("pointer", key))
        return record if isinstance(record, Pointer) else None

    def cached_variant(self, key: str) -> Variant | None:
        """The tier's copy, if fresh; never blocks (for the event loop)."""
        record = self._records.get(("variant", key))
        return record if isinstance(record, Variant) else None

    def get_pointer(self, key: str) -> Pointer | None:
        return self._get(("pointer", key), self.backing.get_pointer, Pointer)

    def get_variant(self, key: str) -> Variant | None:
        return self._get(("variant", key), self.backing.get_variant, Variant)

    def put_pointer(self, key: str, pointer: Pointer) -> None:
        self._put(("pointer", key), pointer, self.backing.put_pointer)

    def put_variant(self, key: str, variant: Variant) -> None:
        self._put(("variant", key), variant, self.backing.put_variant)

    def get_source(self, key: str) -> bytes | None:
        """From the folder only: sources are read on misses, never on hits."""
        return self.backing.get_source(key)

    def put_source(self, key: str, body: bytes) -> None:
        self.backing.put_source(key, body)

    def try_lock(self, key: str, ttl_ms: int) -> str | None:
        return self.backing.try_lock(key, ttl_ms)

    def unlock(self, key: str, token: str) -> None:
        self.backing.unlock(key, token)

    def ping(self) -> None:
        self.backing.ping()

    def delete_pointers(self, keys: Sequence[str]) -> int | None:
        """From the folder, then from this process's tier (other processes' tiers hold a pointer
        at most ``pointer_ttl`` more)."""
        try:
            return self.backing.delete_pointers(keys)
        finally:
            for key in keys:
                self._records.drop(("pointer", key))

    def delete_all_pointers(self) -> int | None:
        try:
            return self.backing.delete_all_pointers()
        finally:
            for kind, key in self._records.held():
                if kind == "pointer":
                    self._records.drop((kind, key))

    def _get(self, index: Index, read: Callable[[str], R | None], kind: type[R]) -> R | None:
        cached = self._records.get(index)
        if isinstance(cached, kind):
            return cached
        record = read(index[1])
        if record is not None:  # unless a write (or a read) since is as new
            self._records.put(index, record, self._ttl[index[0]], replace=False)
        return record

    def _put(self, index: Index, record: R, write: Callable[[str, R], None]) -> None:
        try:
            write(index[1], record)
        except BaseException:
            self._records.drop(index)  # the folder may hold the old record or this one
            raise
        self._records.drop(index)  # a record too large for the tier must not leave an old one
        self._records.put(index, record, self._ttl[index[0]])
