"""A small in-memory tier in front of the filesystem store: a hit costs no thread hop (which alone
costs more than the rest of a hit) and, when hot, no file read.

``GuardedStore`` asks it on the event loop, which may only look at memory, ``stat`` a file and read
a small one the page cache holds whole (``RWF_NOWAIT``). It holds only what the filesystem holds:
a pointer while its file's identity is unchanged, a content-addressed variant as is (the rules,
and why: docs/architecture.md, "The filesystem store's hot tier")."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, Protocol, TypeVar

from handler.model import Pointer, Variant
from handler.stores.base import Locking, Purging, Store
from handler.stores.byte_lru import ByteLRU
from handler.stores.filesystem import FilesystemStore, Identity, NotCached
from handler.stores.guarded import AwaitedReads
from handler.stores.record_lru import Index, record_bytes

RECENCY_SECONDS = 30.0  # between reads of a held record from the folder (its LRU recency)
# The share of the tier's bytes for pointers (16 MB of 64: about 17,000), kept apart from the
# variants so that variants cycling through the tier (more of them asked for than it holds) do
# not push the pointers out too: a pointer held costs a hit one stat, one not held a file read.
POINTER_SHARE = 0.25
IDENTITY_BYTES = 100  # what a pointer's identity adds to its charge

R = TypeVar("R", Pointer, Variant)


class Held(NamedTuple):
    record: Pointer | Variant
    identity: Identity | None  # a pointer's file, as it was when read or written here


def _charged(index: Index, held: Held) -> int:
    return record_bytes(index[1], held.record) + (IDENTITY_BYTES if held.identity else 0)


class LockingStore(Store, Locking, Protocol):
    """The store behind a tier: it leads misses across processes (a folder's locks, Redis's)."""


class PassedThrough:
    """What a tier hands straight to the store behind it: the sources (read on misses, never on
    hits, so not held), the locks for misses and the health check."""

    backing: LockingStore

    def get_source(self, key: str) -> bytes | None:
        return self.backing.get_source(key)

    def put_source(self, key: str, body: bytes) -> None:
        self.backing.put_source(key, body)

    def try_lock(self, key: str, ttl_ms: int) -> str | None:
        return self.backing.try_lock(key, ttl_ms)

    def unlock(self, key: str, token: str) -> None:
        self.backing.unlock(key, token)

    def ping(self) -> None:
        self.backing.ping()


class TieredStore(PassedThrough):
    """``backing`` behind a byte-bounded LRU of its recent records (see the module docstring).

    Its blocking calls (``get_*``, ``put_*``) run on a thread as any store's; ``cached_pointer``
    and ``cached_variant`` never wait for the disk, for the event loop.
    """

    backing: FilesystemStore

    def __init__(
        self,
        backing: FilesystemStore,
        max_bytes: int = 64_000_000,
        *,
        recency: float = RECENCY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backing = backing
        self._recency = recency
        pointers = int(max_bytes * POINTER_SHARE)
        self._pointers: ByteLRU[Index, Held] = ByteLRU(pointers, _charged, clock)
        self._variants: ByteLRU[Index, Held] = ByteLRU(max_bytes - pointers, _charged, clock)

    @property
    def tier_bytes(self) -> int:
        """The accounted size of what the tier holds: what ``max_bytes`` bounds."""
        return self._pointers.size + self._variants.size

    def cached_pointer(self, key: str) -> Pointer | None:
        """The pointer, if its file is unchanged since this process held it, or if the page
        cache holds the file; None when it would take the disk, or there is none."""
        return self._pointer(key, wait=False)

    def cached_variant(self, key: str) -> Variant | None:
        """The variant from memory, or from the page cache; None when it would take the disk,
        or there is none."""
        return self._variant(key, wait=False)

    def get_pointer(self, key: str) -> Pointer | None:
        return self._pointer(key, wait=True)

    def get_variant(self, key: str) -> Variant | None:
        return self._variant(key, wait=True)

    def put_pointer(self, key: str, pointer: Pointer) -> None:
        index: Index = ("pointer", key)
        with self._writing(index):
            identity = self.backing.write_pointer(key, pointer)
        if identity is not None:  # else too large for the folder: not written
            self._pointers.put(index, Held(pointer, identity), self._recency)

    def put_variant(self, key: str, variant: Variant) -> None:
        index: Index = ("variant", key)
        with self._writing(index):
            self.backing.put_variant(key, variant)
        self._variants.put(index, Held(variant, None), self._recency)

    def delete_pointers(self, keys: Sequence[str]) -> int | None:
        """From the folder, then from this process's tier (other processes' tiers see the file
        gone at their next ``stat``)."""
        try:
            return self.backing.delete_pointers(keys)
        finally:
            for key in keys:
                self._pointers.drop(("pointer", key))

    def delete_all_pointers(self) -> int | None:
        try:
            return self.backing.delete_all_pointers()
        finally:
            for index in self._pointers.held():
                self._pointers.drop(index)

    def _pointer(self, key: str, *, wait: bool) -> Pointer | None:
        index: Index = ("pointer", key)
        held = self._pointers.get(index)
        if held is not None:
            identity = self.backing.pointer_identity(key)
            if identity is not None and identity == held.identity:
                assert isinstance(held.record, Pointer)
                return held.record
            self._pointers.drop(index)
            if identity is None:
                return None  # gone: evicted or purged (or unreadable: a miss either way)
        try:  # not touched when only reread because another process changed it
            touch = self._recency if held is None else None
            read = self.backing.read_pointer(key, touch=touch, wait=wait)
        except NotCached:
            return None
        return self._hold(index, read)

    def _variant(self, key: str, *, wait: bool) -> Variant | None:
        index: Index = ("variant", key)
        held = self._variants.get(index)
        if held is not None:
            assert isinstance(held.record, Variant)
            return held.record
        try:
            read = self.backing.read_variant(key, touch=self._recency, wait=wait)
        except NotCached:
            return None
        return self._hold(index, read)

    def _hold(self, index: Index, read: tuple[R | None, Identity] | None) -> R | None:
        """Keep a record read from the folder, unless a write (or a read) since is held."""
        if read is None:
            return None
        record, identity = read
        if record is None:
            return None
        held = Held(record, identity if index[0] == "pointer" else None)
        self._lru(index).put(index, held, self._recency, replace=False)
        return record

    def _lru(self, index: Index) -> ByteLRU[Index, Held]:
        return self._pointers if index[0] == "pointer" else self._variants

    @contextlib.contextmanager
    def _writing(self, index: Index) -> Iterator[None]:
        """The write, then the key dropped from the tier, whether or not it failed: the folder
        may hold the old record or the new one after a failure, and a record too large for the
        tier must not leave an old one."""
        try:
            yield
        finally:
            self._lru(index).drop(index)


class SharedStore(LockingStore, Purging, AwaitedReads, Protocol):
    """A store shared by processes and hosts (Redis): locks for misses, purgeable pointers,
    reads awaited on the event loop."""


class HeldVariants(PassedThrough):
    """``backing`` (the Redis store) with this process's recent variants in memory, least
    recently used first out past ``max_bytes``, answered on the event loop.

    Only variants: a variant is content-addressed (its key names the source bytes), so a copy
    of it is right whatever another host writes, and outlives its key's expiry or eviction in
    Redis harmlessly. Pointers, which another host can refresh or purge, are always read from
    Redis, so what each host serves stays what Redis says. A hit thus costs one round trip (the
    pointer's) instead of two, awaited on the event loop (``await_pointer``), not in a thread.
    """

    backing: SharedStore

    def __init__(self, backing: SharedStore, max_bytes: int = 64_000_000) -> None:
        self.backing = backing
        self._variants: ByteLRU[str, Variant] = ByteLRU(max_bytes, record_bytes)

    @property
    def tier_bytes(self) -> int:
        return self._variants.size

    def cached_pointer(self, key: str) -> Pointer | None:
        return None  # always Redis's

    def cached_variant(self, key: str) -> Variant | None:
        return self._variants.get(key)

    def get_pointer(self, key: str) -> Pointer | None:
        return self.backing.get_pointer(key)

    def put_pointer(self, key: str, pointer: Pointer) -> None:
        self.backing.put_pointer(key, pointer)

    def get_variant(self, key: str) -> Variant | None:
        return self._variants.get(key) or self._held(key, self.backing.get_variant(key))

    def put_variant(self, key: str, variant: Variant) -> None:
        self.backing.put_variant(key, variant)  # held once Redis has it
        self._variants.put(key, variant)

    async def await_pointer(self, key: str) -> Pointer | None:
        return await self.backing.await_pointer(key)

    async def await_variant(self, key: str) -> Variant | None:
        return self._variants.get(key) or self._held(key, await self.backing.await_variant(key))

    def _held(self, key: str, variant: Variant | None) -> Variant | None:
        """A variant read from Redis, now held here too."""
        if variant is not None:
            self._variants.put(key, variant)
        return variant

    def delete_pointers(self, keys: Sequence[str]) -> int | None:
        return self.backing.delete_pointers(keys)

    def delete_all_pointers(self) -> int | None:
        return self.backing.delete_all_pointers()
