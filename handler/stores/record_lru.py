"""The byte-bounded LRU of store records, for the memory store and the filesystem store's hot
tier alike.

Every record is charged its variable-length fields plus a fixed overhead, so a flood of small
records (one pointer per distinct URL) cannot grow the process without bound either.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from handler.model import Pointer, Variant
from handler.stores.byte_lru import ByteLRU

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


class RecordLRU(ByteLRU[Index, Record]):
    """Store records by ``(kind, key)``, each charged by ``record_bytes``."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(max_bytes, lambda index, record: record_bytes(index[1], record), clock)
