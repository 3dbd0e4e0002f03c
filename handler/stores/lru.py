"""A byte-bounded, thread-safe LRU of store records, for the memory store and the filesystem
store's hot tier alike.

Every record is charged its variable-length fields plus a fixed overhead, so a flood of small
records (one pointer per distinct URL) cannot grow the process without bound either.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

from handler.stores.base import Pointer, Variant

# What a record costs beyond its variable-length fields: the objects, their field headers and
# the index entry. An estimate, but a fixed one per record.
RECORD_OVERHEAD = 640  # a pointer measures about 830 bytes in all with tracemalloc

Index = tuple[Literal["pointer", "variant", "source"], str]
Record = Pointer | Variant | bytes


def record_bytes(key: str, record: Record) -> int:
    """What ``record`` is charged: its strings count too, so a hostile ETag is not free."""
    if isinstance(record, Pointer):
        fields = len(record.source_hash) + len(record.etag) + len(record.upstream_etag or "")
    elif isinstance(record, Variant):
        fields = len(record.body) + len(record.content_type) + len(record.etag)
    else:
        fields = len(record)
    return RECORD_OVERHEAD + len(key) + fields


class RecordLRU:
    """Records by ``(kind, key)``, least recently used evicted first past ``max_bytes``; each may
    carry a time to live (``clock`` seconds), past which it is gone."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        # index -> (record, charged bytes, clock time it expires)
        self._records: OrderedDict[Index, tuple[Record, int, float]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """The accounted size of every record held: what ``max_bytes`` bounds."""
        return self._size

    def get(self, index: Index) -> Record | None:
        with self._lock:
            entry = self._records.get(index)
            if entry is None:
                return None
            if entry[2] <= self._clock():
                self._drop(index)
                return None
            self._records.move_to_end(index)
            return entry[0]

    def put(
        self, index: Index, record: Record, ttl: float = math.inf, *, replace: bool = True
    ) -> None:
        """Hold ``record``; one larger than the whole bound is not held (an older one stays).

        ``replace=False`` keeps a record already held: a slow read must not replace a newer write.
        """
        size = record_bytes(index[1], record)
        if size > self.max_bytes:
            return
        with self._lock:
            if not replace and index in self._records:
                return
            self._drop(index)
            self._records[index] = (record, size, self._clock() + ttl)
            self._size += size
            while self._size > self.max_bytes:
                self._drop(next(iter(self._records)))

    def drop(self, index: Index) -> None:
        with self._lock:
            self._drop(index)

    def _drop(self, index: Index) -> None:
        entry = self._records.pop(index, None)
        if entry is not None:
            self._size -= entry[1]
