"""A byte-bounded, thread-safe LRU with a time to live per entry: the memory store, the
filesystem store's hot tier and the replayed hits (``handler.http.replay``) each keep one.

Each entry is charged what its ``size_of`` says, so a bound in bytes holds however the
entries are shaped; an entry larger than the whole bound is not kept.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteLRU(Generic[K, V]):
    """Values by key, least recently used evicted first past ``max_bytes``; each may carry a
    time to live (``clock`` seconds), past which it is gone."""

    def __init__(
        self,
        max_bytes: int,
        size_of: Callable[[K, V], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._clock = clock
        # key -> (value, charged bytes, clock time it expires)
        self._entries: OrderedDict[K, tuple[V, int, float]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """The accounted size of every entry held: what ``max_bytes`` bounds."""
        return self._size

    def get(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[2] <= self._clock():
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: K, value: V, ttl: float = math.inf, *, replace: bool = True) -> None:
        """Hold ``value``; one larger than the whole bound is not held (an older one stays).

        ``replace=False`` keeps a value already held: a slow read must not replace a newer write.
        """
        size = self._size_of(key, value)
        if size > self.max_bytes:
            return
        with self._lock:
            if not replace and key in self._entries:
                return
            self._drop(key)
            self._entries[key] = (value, size, self._clock() + ttl)
            self._size += size
            while self._size > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def drop(self, key: K) -> None:
        with self._lock:
            self._drop(key)

    def held(self) -> list[K]:
        """The keys held now, least recently used first (expired ones included until read)."""
        with self._lock:
            return list(self._entries)

    def _drop(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._size -= entry[1]
