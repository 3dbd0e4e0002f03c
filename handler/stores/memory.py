"""An in-process store: for tests and `next-image serve --store memory`; bounded, LRU."""

from __future__ import annotations

from collections.abc import Sequence

from handler.model import Pointer, Variant
from handler.stores.record_lru import RecordLRU


class MemoryStore:
    """Pointers, variants and sources share one byte bound and one least-recently-used order.

    ``in_process``: its calls never block, so they are made on the event loop itself.
    """

    in_process = True

    def __init__(self, max_bytes: int = 256_000_000) -> None:
        self._records = RecordLRU(max_bytes)

    def ping(self) -> None:
        """Always ready: it lives in this process."""

    @property
    def total_bytes(self) -> int:
        """The accounted size of every record held: what the bound applies to."""
        return self._records.size

    def get_pointer(self, key: str) -> Pointer | None:
        record = self._records.get(("pointer", key))
        return record if isinstance(record, Pointer) else None

    def put_pointer(self, key: str, pointer: Pointer) -> None:
        self._records.put(("pointer", key), pointer)

    def get_variant(self, key: str) -> Variant | None:
        record = self._records.get(("variant", key))
        return record if isinstance(record, Variant) else None

    def put_variant(self, key: str, variant: Variant) -> None:
        self._records.put(("variant", key), variant)

    def get_source(self, key: str) -> bytes | None:
        record = self._records.get(("source", key))
        return record if isinstance(record, bytes) else None

    def put_source(self, key: str, body: bytes) -> None:
        self._records.put(("source", key), body)

    def delete_pointers(self, keys: Sequence[str]) -> int:
        found = [key for key in keys if self._records.get(("pointer", key)) is not None]
        for key in found:
            self._records.drop(("pointer", key))
        return len(found)

    def delete_all_pointers(self) -> int:
        pointers = [key for kind, key in self._records.held() if kind == "pointer"]
        return self.delete_pointers(pointers)
