"""An in-process store: for tests and `next-image serve --store memory`; bounded, LRU."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Literal

from handler.stores.base import Pointer, Variant

# What a record costs beyond its variable-length fields: the objects, their field headers and
# the index entry. An estimate, but a fixed one per record, so a flood of small records (one
# pointer per distinct URL) cannot grow the process without bound.
_RECORD_OVERHEAD = 640  # a pointer measures about 830 bytes in all with tracemalloc

_Index = tuple[Literal["pointer", "variant", "source"], str]
_Record = Pointer | Variant | bytes


def _record_bytes(key: str, record: _Record) -> int:
    """What ``record`` is charged: its strings count too, so a hostile ETag is not free."""
    if isinstance(record, Pointer):
        fields = len(record.source_hash) + len(record.etag) + len(record.upstream_etag or "")
    elif isinstance(record, Variant):
        fields = len(record.body) + len(record.content_type) + len(record.etag)
    else:
        fields = len(record)
    return _RECORD_OVERHEAD + len(key) + fields


class MemoryStore:
    """Pointers, variants and sources share one byte bound and one least-recently-used order.

    ``in_process``: its calls never block, so they are made on the event loop itself.
    """

    in_process = True

    def __init__(self, max_bytes: int = 256_000_000) -> None:
        self._max_bytes = max_bytes
        self._records: OrderedDict[_Index, tuple[_Record, int]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def ping(self) -> None:
        """Always ready: it lives in this process."""

    @property
    def total_bytes(self) -> int:
        """The accounted size of every record held: what the bound applies to."""
        return self._size

    def get_pointer(self, key: str) -> Pointer | None:
        record = self._get(("pointer", key))
        return record if isinstance(record, Pointer) else None

    def put_pointer(self, key: str, pointer: Pointer) -> None:
        self._put(("pointer", key), pointer)

    def get_variant(self, key: str) -> Variant | None:
        record = self._get(("variant", key))
        return record if isinstance(record, Variant) else None

    def put_variant(self, key: str, variant: Variant) -> None:
        self._put(("variant", key), variant)

    def get_source(self, key: str) -> bytes | None:
        record = self._get(("source", key))
        return record if isinstance(record, bytes) else None

    def put_source(self, key: str, body: bytes) -> None:
        self._put(("source", key), body)

    def _get(self, index: _Index) -> _Record | None:
        with self._lock:
            entry = self._records.get(index)
            if entry is None:
                return None
            self._records.move_to_end(index)
            return entry[0]

    def _put(self, index: _Index, record: _Record) -> None:
        size = _record_bytes(index[1], record)
        if size > self._max_bytes:
            return
        with self._lock:
            old = self._records.pop(index, None)
            self._size += size - (old[1] if old else 0)
            self._records[index] = (record, size)
            while self._size > self._max_bytes:
                _, (_, evicted) = self._records.popitem(last=False)
                self._size -= evicted
