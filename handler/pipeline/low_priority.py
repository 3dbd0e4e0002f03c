"""Threads for a miss's CPU work (hashing, planning, transforming), below the event loop's
priority.

A transform keeps every core busy (libvips runs its own worker threads, which inherit their
creator's priority). At equal priority, the event loop, which answers cache hits in
microseconds, waits its turn among them; with the CPU work niced, the kernel runs the loop
first, and a hit during a burst is answered at once. Store calls and file reads stay on
anyio's threads at normal priority: they are what hits wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import anyio

T = TypeVar("T")

NICENESS = 10  # added to the process's own; Linux threads have their own nice value


def _lower_priority() -> None:
    # Not Linux, or not allowed: run at normal priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)


class LowPriorityThreads:
    def __init__(self, threads: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, threads), thread_name_prefix=name, initializer=_lower_priority
        )

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on one of these threads; a cancelled caller still waits for it to end, so an
        admission slot it holds is never handed on while the work still runs."""
        future = asyncio.get_running_loop().run_in_executor(self._pool, fn)
        try:
            return await asyncio.shield(future)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await asyncio.wait([future])
            raise
