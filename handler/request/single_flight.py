"""Identical work done once: concurrent misses (or revalidations) of one request share one run.

In this process, callers with one key await one task (``share``); across processes and hosts
sharing a store, one leads and the others wait for its variant (``lead``, a store lock). Every
in-flight key, and the lock's, is spelled by one function, ``flight_key``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Literal

import anyio

from handler.model import ImageParams, Served
from handler.request.admission import Admission
from handler.request.keys import pointer_key
from handler.stores.guarded import GuardedStore

LOCK_POLL_SECONDS = 0.1  # how often a process waiting on another's miss looks for its variant
# What is in flight: a miss's fetch and transform, a stale answer's revalidation, or the AVIF a
# fast first view deferred.
Flight = Literal["miss", "revalidation", "deferred"]


def flight_key(flight: Flight, params: ImageParams, variant_key: str) -> str:
    """The one spelling of an in-flight key: the request's URL and variant key (a miss's, with
    no source hash: the source is not known yet), prefixed by what is in flight (a miss's key is
    its store lock's too: unprefixed). A deferred AVIF's is its variant key alone: variants are
    content-addressed, so the same bytes under another URL make the same one."""
    if flight == "deferred":
        return f"deferred\0{variant_key}"
    key = f"{params.href}\0{variant_key}"
    return key if flight == "miss" else f"{flight}\0{key}"


class SingleFlight:
    def __init__(self, store: GuardedStore, admission: Admission) -> None:
        self._store = store
        self._admission = admission
        self._inflight: dict[str, asyncio.Future[Served]] = {}

    def running(self, key: str) -> bool:
        return key in self._inflight

    async def share(
        self, key: str, work: Callable[[], Awaitable[Served]], deadline: float
    ) -> Served:
        """Concurrent callers with one key share one run of ``work``.

        The run is a task of its own, so it carries the first caller's deadline itself: no work
        outlives the budget of the request that started it.
        """
        future = self._inflight.get(key)
        if future is None:

            async def bounded() -> Served:
                with anyio.fail_after(max(deadline - anyio.current_time(), 0.0)):
                    return await work()

            future = asyncio.ensure_future(bounded())
            self._inflight[key] = future
            future.add_done_callback(lambda _: self._inflight.pop(key, None))
            # Its callers may all be gone (their own deadline came first, while the work was
            # still stopping): its failure is theirs, not an unretrieved task exception.
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await asyncio.shield(future)

    @asynccontextmanager
    async def lead(
        self, key: str, deadline: float, stored: Callable[[], Awaitable[Served | None]]
    ) -> AsyncIterator[Served | None]:
        """Across processes and hosts sharing a store: lead this miss (yields None), or wait
        for the leader's answer (yields what ``stored`` found meanwhile).

        A leader that died leaves its lock to expire; a waiter stops waiting in time to do the
        work itself within its own budget (and leads without a lock).
        """
        lock_key = pointer_key(key)
        while True:
            remaining = deadline - anyio.current_time()
            token = await self._store.lead(lock_key, int(max(remaining, 0.1) * 1000))
            if token != "":
                break
            if remaining < self._admission.expected_seconds + 2 * LOCK_POLL_SECONDS:
                break
            await anyio.sleep(LOCK_POLL_SECONDS)
            theirs = await stored()
            if theirs is not None:
                yield theirs
                return
        try:
            yield None
        finally:
            if token:
                with anyio.CancelScope(shield=True):
                    await self._store.release(lock_key, token)
