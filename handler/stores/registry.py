"""The store backends by name: what ``--store`` (``NEXT_IMAGE_STORE``) accepts, how each is built.

Each name maps to ``"module:function"``, the backend module's ``from_settings(settings)``,
imported only when that store is built: the Lambda init never loads redis or the filesystem
store, and the settings list the names without importing a backend (nor a backend the settings).
A new backend is its module with ``from_settings`` and one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from handler.stores.base import Store

STORES: Mapping[str, str] = {
    "memory": "handler.stores.memory:from_settings",
    "filesystem": "handler.stores.tiered:from_settings",  # the folder behind its in-memory tier
    "s3": "handler.stores.s3:from_settings",
    "redis": "handler.stores.redis:from_settings",
}
NAMES: tuple[str, ...] = tuple(STORES)


def build(name: str, settings: object) -> Store:
    """The ``name`` store, built by its module's ``from_settings`` from ``settings``."""
    if name not in STORES:
        raise ValueError(f"no store named {name!r}: {', '.join(NAMES)}")
    module, _, function = STORES[name].partition(":")
    store: Store = getattr(importlib.import_module(module), function)(settings)
    return store
