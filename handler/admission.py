"""Admission control for transforms: a few at once, within a memory budget, first come first served.

Without it a burst starts one libvips pipeline per request: threads and resident memory grow with
the burst, every transform slows down, and they all run out of time together (measured: 64
concurrent misses, 3.5 GiB and a third of them 504 after 30 s). Here a transform reserves a slot
and the memory its plan says it needs before it decodes a pixel; the others wait in arrival
order. A request that finds the queue full, or would not start in time to finish within its
budget (judged from its place in the queue and recent transform times), is answered 503 with
``Retry-After`` at once, and a client or CDN can try again.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from handler import errors
from handler.errors import ImageError

_FIRST_GUESS_SECONDS = 1.0  # expected transform time before any was measured
_SMOOTHING = 0.2  # weight of the newest transform in the running average


@dataclass
class _Waiter:
    cost: int
    deadline: float
    granted: asyncio.Future[None]  # a result when granted, an ImageError when refused


class Admission:
    """At most ``max_running`` transforms holding at most ``memory_budget`` bytes in all.

    A cost above the whole budget is capped at it: such a transform runs alone rather than never.
    """

    def __init__(
        self,
        *,
        max_running: int,
        memory_budget: int,
        max_queue: int,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.max_running = max(1, max_running)
        self.memory_budget = max(1, memory_budget)
        self.max_queue = max(0, max_queue)
        self.on_idle = on_idle  # called when the last transform ends and nobody waits
        self._running = 0
        self._reserved = 0
        self._waiters: deque[_Waiter] = deque()
        self._average_seconds = _FIRST_GUESS_SECONDS
        self._started: list[float] = []  # time.monotonic() of each running transform

    @property
    def running(self) -> int:
        return self._running

    @property
    def reserved(self) -> int:
        return self._reserved

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def expected_seconds(self) -> float:
        """How long a transform takes: the recent average, or longer if one is running longer.

        At the start of a burst nothing has finished yet; the running ones already tell.
        """
        now = time.monotonic()
        return max([self._average_seconds, *(now - started for started in self._started)])

    def check(self) -> None:
        """Refuse at once when the queue is full, before a request fetches and decodes anything."""
        if len(self._waiters) >= self.max_queue and not self._fits(0):
            raise self._overloaded()

    @asynccontextmanager
    async def slot(self, memory: int, *, deadline: float) -> AsyncIterator[None]:
        """Hold a transform slot and ``memory`` bytes until the block ends.

        ``deadline`` is the request's (``anyio.current_time()`` clock): waiting stops early enough
        for a transform of the usual length to finish before it.
        """
        cost = min(max(memory, 0), self.memory_budget)
        await self._acquire(cost, deadline)
        started = time.monotonic()
        self._started.append(started)
        try:
            yield
        finally:
            self._started.remove(started)
            elapsed = time.monotonic() - started
            self._average_seconds += _SMOOTHING * (elapsed - self._average_seconds)
            self._running -= 1
            self._reserved -= cost
            self._grant()
            if self._running == 0 and not self._waiters and self.on_idle is not None:
                self.on_idle()

    async def _acquire(self, cost: int, deadline: float) -> None:
        if not self._waiters and self._fits(cost):
            self._take(cost)
            return
        if len(self._waiters) >= self.max_queue:
            raise self._overloaded()
        expected = self.expected_seconds
        rounds = len(self._waiters) // self.max_running + 1  # transforms ahead, per slot
        if anyio.current_time() + (rounds + 1) * expected > deadline:
            raise self._overloaded()  # it would start too late to finish: say so now
        waiter = _Waiter(cost, deadline, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        wait = deadline - self.expected_seconds - anyio.current_time()
        try:
            with anyio.fail_after(max(wait, 0.0)):
                await asyncio.shield(waiter.granted)
        except BaseException as exc:  # refused, a timeout, or the request's own cancellation
            granted = waiter.granted
            if not granted.done():
                granted.cancel()
                self._waiters.remove(waiter)
            elif not granted.cancelled() and granted.exception() is None:
                self._running -= 1  # granted as we gave up: hand the slot on
                self._reserved -= cost
            self._grant()
            if isinstance(exc, TimeoutError):
                raise self._overloaded() from None
            raise

    def _fits(self, cost: int) -> bool:
        return self._running < self.max_running and self._reserved + cost <= self.memory_budget

    def _take(self, cost: int) -> None:
        self._running += 1
        self._reserved += cost

    def _grant(self) -> None:
        """Start waiters in arrival order while the head of the queue fits; tell those that can
        no longer start in time now (transforms run longer under load), not at their deadline."""
        while self._waiters and self._fits(self._waiters[0].cost):
            waiter = self._waiters.popleft()
            self._take(waiter.cost)
            waiter.granted.set_result(None)
        expected, now = self.expected_seconds, anyio.current_time()
        for index, waiter in enumerate(list(self._waiters)):
            rounds = index // self.max_running + 1
            if now + (rounds + 1) * expected > waiter.deadline:
                self._waiters.remove(waiter)
                waiter.granted.set_exception(self._overloaded())

    def _overloaded(self) -> ImageError:
        """503, uncacheable, with a retry hint from the queue and recent transform times."""
        rounds = len(self._waiters) / self.max_running + 1
        retry_after = min(max(math.ceil(self.expected_seconds * rounds), 1), 60)
        headers = {"Retry-After": str(retry_after), "Cache-Control": "no-store"}
        return ImageError(503, errors.OVERLOADED, category="overload", headers=headers)
