"""Variants, pointers and sources in S3, laid out so CloudFront serves variants straight from the
bucket (the keys: docs/architecture.md, "Store records"; the objects: docs/lambda.md).

boto3 is imported on first use: the Lambda init phase stays short. A warm process remembers the
pointers it read or wrote for ``POINTER_MEMORY_SECONDS`` (a hit then costs one GET) and nothing
else: whether a variant exists is asked each time, so a lost object is rewritten at the next miss.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from handler.model import Pointer, Variant
from handler.stores.records import decode_pointer, encode_pointer
from handler.stores.s3_client import error_code, s3_client

VARIANTS = "_next/image-variants/"
POINTERS = "_next/image-pointers/"
SOURCES = "_next/image-sources/"
VARIANT_CACHE_CONTROL = "public, max-age=31536000, immutable"
_WRITE_LOST = {"PreconditionFailed", "ConditionalRequestConflict"}  # someone else wrote it first
_MISSING = {"NoSuchKey", "404", "NotFound"}
# How long a warm instance uses a pointer from its memory without asking S3 again: a purge
# (``next-image purge``) or another instance's refresh reaches every instance within it.
POINTER_MEMORY_SECONDS = 10.0
DELETE_BATCH = 1000  # keys per DeleteObjects, S3's maximum


class KeyLayout:
    """Where a record of each kind is kept: its folder under the store's ``prefix``. The S3
    objects' keys, and the Redis store's keys (``redis.py``) the same way."""

    prefix: str

    def variant_at(self, key: str) -> str:
        return f"{self.prefix}{VARIANTS}{key}"

    def pointer_at(self, key: str) -> str:
        return f"{self.prefix}{POINTERS}{key}"

    def source_at(self, key: str) -> str:
        return f"{self.prefix}{SOURCES}{key}"


class PointerCache:
    """A small LRU of pointers, each kept until it expires or ``POINTER_MEMORY_SECONDS`` after it
    was read or written here, whichever comes first: a pointer another instance refreshed, or
    ``next-image purge`` deleted, is seen by every instance within that bound."""

    def __init__(
        self,
        max_entries: int,
        clock: Callable[[], float] = time.time,
        memory_seconds: float = POINTER_MEMORY_SECONDS,
    ) -> None:
        self._max = max_entries
        self._clock = clock
        self._memory_seconds = memory_seconds
        self._entries: OrderedDict[str, tuple[Pointer, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Pointer | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            pointer, until = entry
            if self._clock() > until:
                del self._entries[key]  # another instance may have refreshed it: ask S3
                return None
            self._entries.move_to_end(key)
            return pointer

    def drop(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def put(self, key: str, pointer: Pointer) -> None:
        now = self._clock()
        if self._max <= 0 or now > pointer.expire_at:
            return
        with self._lock:
            self._entries[key] = (pointer, min(pointer.expire_at, now + self._memory_seconds))
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)


class S3Store(KeyLayout):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        pointer_cache_size: int = 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client = client
        self._pointers = PointerCache(pointer_cache_size, clock)

    @property
    def client(self) -> Any:
        return self._client if self._client is not None else s3_client()

    def ping(self) -> None:
        """One HeadBucket: reachable, and allowed to use the bucket."""
        self.client.head_bucket(Bucket=self.bucket)

    variant_object_key = KeyLayout.variant_at
    pointer_object_key = KeyLayout.pointer_at
    source_object_key = KeyLayout.source_at

    def get_pointer(self, key: str) -> Pointer | None:
        pointer = self._pointers.get(key)
        if pointer is None:
            data = self._get(self.pointer_object_key(key))
            pointer = decode_pointer(data["Body"].read()) if data else None
            if pointer is not None:
                self._pointers.put(key, pointer)
        return pointer

    def put_pointer(self, key: str, pointer: Pointer) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.pointer_object_key(key),
            Body=encode_pointer(pointer),
            ContentType="application/json",
        )
        self._pointers.put(key, pointer)

    def get_variant(self, key: str) -> Variant | None:
        data = self._get(self.variant_object_key(key))
        if data is None:
            return None
        meta = data.get("Metadata", {})
        kind = meta.get("kind")
        if kind not in ("optimized", "original", "fallback") or not meta.get("etag"):
            return None  # not written by us: regenerate rather than serve something unknown
        return Variant(data["Body"].read(), data["ContentType"], meta["etag"], kind)

    def put_variant(self, key: str, variant: Variant) -> None:
        """Returns once S3 holds the object: written now, or already there (412/409)."""
        self._put_once(
            self.variant_object_key(key),
            variant.body,
            ContentType=variant.content_type,
            CacheControl=VARIANT_CACHE_CONTROL,
            Metadata={"etag": variant.etag, "kind": variant.kind},
        )

    def get_source(self, key: str) -> bytes | None:
        data = self._get(self.source_object_key(key))
        return data["Body"].read() if data else None

    def put_source(self, key: str, body: bytes) -> None:
        """Returns once S3 holds the object: written now, or already there (412/409)."""
        self._put_once(self.source_object_key(key), body, ContentType="application/octet-stream")

    def delete_pointers(self, keys: Sequence[str]) -> None:
        """``DeleteObjects`` in batches (``next-image purge``). S3 answers alike whether a key
        was there or not, so how many were is not known: None."""
        self._delete([self.pointer_object_key(key) for key in keys])
        for key in keys:
            self._pointers.drop(key)

    def delete_all_pointers(self) -> int:
        """Every object under the pointers prefix (listed, then deleted); how many."""
        paginator = self.client.get_paginator("list_objects_v2")
        removed = 0
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.pointer_object_key("")):
            keys = [item["Key"] for item in page.get("Contents", [])]
            self._delete(keys)
            removed += len(keys)
        self._pointers.clear()
        return removed

    def _delete(self, object_keys: Sequence[str]) -> None:
        for start in range(0, len(object_keys), DELETE_BATCH):
            batch = object_keys[start : start + DELETE_BATCH]
            answer = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
            failed = answer.get("Errors") or []
            if failed:
                first = failed[0]
                raise RuntimeError(
                    f"S3 did not delete {len(failed)} of {len(batch)} pointers, e.g. "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )

    def _put_once(self, object_key: str, body: bytes, **fields: Any) -> None:
        """A content-addressed write: a concurrent writer's 412/409 means the bytes are there."""
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=object_key, Body=body, IfNoneMatch="*", **fields
            )
        except Exception as exc:
            if error_code(exc) not in _WRITE_LOST:
                raise

    def _get(self, object_key: str) -> dict[str, Any] | None:
        try:
            response: dict[str, Any] = self.client.get_object(Bucket=self.bucket, Key=object_key)
        except Exception as exc:
            if error_code(exc) in _MISSING:
                return None
            raise
        return response
