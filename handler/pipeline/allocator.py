"""glibc malloc settings that let memory go back to the system after a burst of transforms.

libvips allocates from many threads; glibc gives each its own arena (up to 8 per core), and freed
pages inside arenas stay resident. Fewer arenas, and an explicit trim once a burst of transforms
is over (``serve`` only), return them. Elsewhere (musl, macOS) these are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

_M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h
ARENAS = 2


@functools.cache
def _libc() -> Any:
    path = ctypes.util.find_library("c")
    libc = ctypes.CDLL(path) if path else None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap malloc arenas (``MALLOC_ARENA_MAX``, settable after start-up); True if applied."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_ARENA_MAX, arenas) == 1)


def release_free_memory() -> None:
    """Give free heap pages back to the system (``malloc_trim``); takes well under a millisecond
    on an idle heap, and is called from a worker thread, never the event loop."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
