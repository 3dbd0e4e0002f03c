"""Work that runs after its response: a background revalidation, the AVIF a first view deferred.

One set of tasks per coordinator, so that ``drain`` (tests, shutdown) can wait for all of it and
no task is dropped by the event loop while it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, work: Coroutine[None, None, None]) -> None:
        """Run ``work`` after the response; ``drain`` waits for it."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
