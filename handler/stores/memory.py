"""An in-process store: for tests and `next-image serve --store memory`; bounded, LRU."""

from __future__ import annotations

import threading
from collections import OrderedDict

from handler.stores.base import Pointer, Variant


class MemoryStore:
    def __init__(self, max_bytes: int = 256_000_000) -> None:
        self._max_bytes = max_bytes
        self._pointers: dict[str, Pointer] = {}
        self._variants: OrderedDict[str, Variant] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get_pointer(self, key: str) -> Pointer | None:
        return self._pointers.get(key)

    def put_pointer(self, key: str, pointer: Pointer) -> None:
        self._pointers[key] = pointer

    def get_variant(self, key: str) -> Variant | None:
        with self._lock:
            variant = self._variants.get(key)
            if variant is not None:
                self._variants.move_to_end(key)
            return variant

    def put_variant(self, key: str, variant: Variant) -> None:
        size = len(variant.body)
        if size > self._max_bytes:
            return
        with self._lock:
            old = self._variants.pop(key, None)
            self._size -= len(old.body) if old else 0
            self._variants[key] = variant
            self._size += size
            while self._size > self._max_bytes:
                _, evicted = self._variants.popitem(last=False)
                self._size -= len(evicted.body)
