"""The store backends by name: what ``--store`` (``NEXT_IMAGE_STORE``) accepts, how each is built.

Each factory imports its backend only when that store is built, so the Lambda init never loads
redis or the filesystem store. A backend sees the settings as a ``StoreOptions`` record, which
keeps ``handler.stores`` free of the entry points. A new backend is its module and one factory
here (and, for options of its own, their fields in ``StoreOptions``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from handler.stores.base import Store


@dataclass(frozen=True)
class StoreOptions:
    """What the settings say about the store (``handler.entry.settings``' fields of these names)."""

    cache_max_bytes: int
    cache_dir: str
    hot_cache_bytes: int
    bucket: str | None
    prefix: str
    redis_url: str | None
    variant_ttl: int


def _memory(options: StoreOptions) -> Store:
    from handler.stores.memory import MemoryStore

    return MemoryStore(options.cache_max_bytes)


def _filesystem(options: StoreOptions) -> Store:
    """The folder, behind an in-memory tier unless ``--hot-cache-bytes`` is 0."""
    from handler.stores.filesystem import FilesystemStore
    from handler.stores.tiered import TieredStore

    folder = FilesystemStore(options.cache_dir, options.cache_max_bytes)
    return TieredStore(folder, options.hot_cache_bytes) if options.hot_cache_bytes > 0 else folder


def _s3(options: StoreOptions) -> Store:
    from handler.stores.s3 import S3Store

    if not options.bucket:
        raise ValueError("the s3 store needs NEXT_IMAGE_BUCKET")
    return S3Store(options.bucket, options.prefix)


def _redis(options: StoreOptions) -> Store:
    """Each process keeps its recent variants in memory unless ``--hot-cache-bytes`` is 0."""
    from handler.stores.redis import RedisStore
    from handler.stores.tiered import HeldVariants

    if not options.redis_url:
        raise ValueError("the redis store needs NEXT_IMAGE_REDIS_URL")
    store = RedisStore(options.redis_url, options.prefix, variant_ttl=options.variant_ttl)
    return HeldVariants(store, options.hot_cache_bytes) if options.hot_cache_bytes > 0 else store


STORES: Mapping[str, Callable[[StoreOptions], Store]] = {
    "memory": _memory,
    "filesystem": _filesystem,
    "s3": _s3,
    "redis": _redis,
}
NAMES: tuple[str, ...] = tuple(STORES)


def build(name: str, options: StoreOptions) -> Store:
    """The ``name`` store, built from ``options``."""
    if name not in STORES:
        raise ValueError(f"no store named {name!r}: {', '.join(NAMES)}")
    return STORES[name](options)
