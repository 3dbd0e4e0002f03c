"""Admission control for transforms: a few at once, within a memory budget, first come first served.

Without it a burst starts one libvips pipeline per request, and they all slow down and run out
of time together. A transform reserves a slot and the memory its plan needs before it decodes a
pixel; a request that finds the queue full, or would not finish within its budget, is answered
503 with ``Retry-After`` at once. Waits are predicted from each plan ahead of it at a measured
pace: docs/architecture.md, "Admission control".
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from handler.contract import errors
from handler.contract.errors import ImageError

_FIRST_GUESS_SECONDS = 1.0  # a transform's planned time when its caller has no plan
_SMOOTHING = 0.2  # weight of the newest transform of usual size in the running averages
_MOST_WEIGHT = 0.5  # the most one transform weighs in the pace (the first ones, a big one)
_OUTLIER_CAP = 2.0  # a transform's measured / planned counts as at most this far from the pace
_OVERDUE_AFTER = 1.0  # seconds a transform runs before its overrun says the machine is slower
# Cores one transform keeps busy when it runs alone (libvips' threads: CPU time / wall time of a
# lone transform measured 1.0 for WebP and JPEG, 1.45 for AVIF on 2 cores).
_TRANSFORM_PARALLELISM = 1.3
# A request is queued only if it would finish this much inside its budget, and refused later only
# if it can no longer finish at all: estimates err, and a 503 given at once beats a late one.
# Until the pace rests on some seconds of measured transforms (a fresh process, one warm-up), the
# margin is up to twice that: one small transform's pace was measured 2-3x off a burst's.
_ADMIT_MARGIN = 1.5
_TRUSTED_AFTER = 5.0  # planned seconds of measured transforms that halve the extra margin


def _step(log_pace: float, elapsed: float, planned: float, weight: float) -> float:
    """How far (in log) one measured transform moves the pace: its measured / planned time's
    distance from the pace, capped at ``_OUTLIER_CAP`` either way, times its weight (at most
    ``_MOST_WEIGHT``)."""
    distance = math.log(max(elapsed, 1e-6) / planned) - log_pace
    cap = math.log(_OUTLIER_CAP)
    return min(weight, _MOST_WEIGHT) * min(max(distance, -cap), cap)


@dataclass(eq=False)
class _Running:
    cost: int
    seconds: float  # planned, on a reference core
    started: float  # time.monotonic() of the grant
    background: bool
    crowd: int = 1  # transforms running (itself included) when it started


@dataclass(eq=False)
class _Waiter:
    cost: int
    seconds: float  # planned, on a reference core
    deadline: float
    granted: asyncio.Future[_Running]  # the running job, or an ImageError when refused


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
        trusted_after: float = _TRUSTED_AFTER,
    ) -> None:
        self.max_running = max(1, max_running)
        self.trusted_after = trusted_after  # 0: trust the first measured pace fully
        self.memory_budget = max(1, memory_budget)
        self.max_queue = max(0, max_queue)
        self.on_idle = on_idle  # called when the last transform ends and nobody waits
        self._reserved = 0
        self._waiters: deque[_Waiter] = deque()
        self._background_waiters: deque[_Waiter] = deque()
        self._running_jobs: list[_Running] = []
        # The recent average of the time plans said (the first transform's own until then), and
        # of the log of measured / planned time: the pace, 1 (the plans' own) until measured.
        self._average_planned: float | None = None
        self._log_pace = 0.0
        self._finished = 0  # transforms measured so far
        self._measured = 0.0  # planned seconds of all transforms measured so far

    @property
    def running(self) -> int:
        return len(self._running_jobs)

    @property
    def reserved(self) -> int:
        return self._reserved

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def expected_seconds(self) -> float:
        """How long a transform takes, plan unknown: a recent one's plan at today's pace."""
        planned = self._average_planned or _FIRST_GUESS_SECONDS
        return planned * self._slowdown() * self._crowding(max(1, len(self._running_jobs)))

    @property
    def pace(self) -> float:
        """Measured time per planned second of a transform running alone, weighted by size
        (big transforms say the most), one outlier bounded (docs/architecture.md, "Admission
        control")."""
        return math.exp(self._log_pace)

    def _crowding(self, running: int) -> float:
        """How much slower each of ``running`` transforms runs than one alone: a lone one keeps
        up to ``_TRANSFORM_PARALLELISM`` cores busy; ``max_running`` slots stand for the cores."""
        cores = float(self.max_running)
        alone = min(cores, _TRANSFORM_PARALLELISM)
        return alone / min(cores / max(running, 1), _TRANSFORM_PARALLELISM)

    def _slowdown(self) -> float:
        """The pace, or slower if running transforms are already well past their planned time:
        each counts as if it finished now with the most weight one transform has, so one stall
        moves it no more than one transform can, and every slot running slow moves it a lot.

        At the start of a burst nothing has finished yet; the running ones already tell.
        """
        now = time.monotonic()
        crowding = self._crowding(len(self._running_jobs))
        log_pace = self._log_pace
        for job in self._running_jobs:
            elapsed = now - job.started
            if elapsed > _OVERDUE_AFTER:  # only ever slower: it has not finished yet
                log_pace += max(_step(log_pace, elapsed / crowding, job.seconds, _MOST_WEIGHT), 0)
        return math.exp(log_pace)

    def check(self) -> None:
        """Refuse at once when the queue is full, before a request fetches and decodes anything."""
        if len(self._waiters) >= self.max_queue and not self._fits(0):
            raise self._overloaded()

    @asynccontextmanager
    async def slot(
        self,
        memory: int,
        *,
        deadline: float,
        seconds: float = _FIRST_GUESS_SECONDS,
        background: bool = False,
    ) -> AsyncIterator[None]:
        """Hold a transform slot and ``memory`` bytes until the block ends.

        ``seconds`` is the transform's planned time on a reference core. ``deadline`` is the
        request's (``anyio.current_time()`` clock): waiting stops early enough for this
        transform to finish before it. ``background``: nobody waits for this transform; it
        runs only when no request waits and a slot stays free for the next one.
        """
        cost = min(max(memory, 0), self.memory_budget)
        seconds = max(seconds, 0.001)
        if background:
            job = await self._acquire_in_background(cost, seconds, deadline)
        else:
            job = await self._acquire(cost, seconds, deadline)
        try:
            yield
        finally:
            crowd = (job.crowd + len(self._running_jobs)) / 2  # on average, while it ran
            self._learn(
                (time.monotonic() - job.started) / self._crowding(round(crowd)), job.seconds
            )
            self._finish(job)
            idle = not (self._running_jobs or self._waiters or self._background_waiters)
            if idle and self.on_idle is not None:
                self.on_idle()

    @property
    def admit_margin(self) -> float:
        """How much inside its budget a request must finish to be queued: more while the pace
        rests on little."""
        doubt = (
            self.trusted_after / (self.trusted_after + self._measured) if self.trusted_after else 0
        )
        return _ADMIT_MARGIN * (1 + doubt)

    def _learn(self, elapsed: float, planned: float) -> None:
        self._measured += planned
        self._finished += 1
        # Weighed by its planned time against the usual one's, more for the first few.
        usual = self._average_planned or planned
        weight = min(_MOST_WEIGHT, max(1 / self._finished, _SMOOTHING * planned / usual))
        self._log_pace += _step(self._log_pace, elapsed, planned, weight)
        if self._average_planned is None:
            self._average_planned = planned
        else:
            self._average_planned += _SMOOTHING * (planned - self._average_planned)

    async def _acquire(self, cost: int, seconds: float, deadline: float) -> _Running:
        if not self._waiters and self._fits(cost):
            # Nothing ahead: refused only if its own plan, at today's pace, overruns the budget
            # (no margin: it would start now, and a plan is only an estimate).
            running = self._crowding(len(self._running_jobs) + 1)
            if anyio.current_time() + seconds * self._slowdown() * running > deadline:
                raise self._overloaded()
            return self._start(cost, seconds)
        if len(self._waiters) >= self.max_queue:
            raise self._overloaded()
        waiter = _Waiter(cost, seconds, deadline, asyncio.get_running_loop().create_future())
        slowdown = self._slowdown()
        finish = self._play_out([*self._waiters, waiter], slowdown)[-1]
        if finish is None or anyio.current_time() + finish * self.admit_margin > deadline:
            raise self._overloaded()  # it would finish too late: say so now
        return await self._wait(waiter, self._waiters, deadline - seconds * slowdown)

    async def _acquire_in_background(self, cost: int, seconds: float, deadline: float) -> _Running:
        waiter = _Waiter(cost, seconds, deadline, asyncio.get_running_loop().create_future())
        if self._background_may_start(waiter):
            return self._start(cost, seconds, background=True)
        return await self._wait(waiter, self._background_waiters, deadline - seconds)

    async def _wait(self, waiter: _Waiter, queue: deque[_Waiter], give_up_at: float) -> _Running:
        """Queue ``waiter`` until granted; past ``give_up_at`` it could not finish in time."""
        queue.append(waiter)
        try:
            with anyio.fail_after(max(give_up_at - anyio.current_time(), 0.0)):
                return await asyncio.shield(waiter.granted)
        except BaseException as exc:  # refused, a timeout, or the request's own cancellation
            granted = waiter.granted
            if not granted.done():
                granted.cancel()
                queue.remove(waiter)
                self._grant()
            elif not granted.cancelled() and granted.exception() is None:
                self._finish(granted.result())  # granted as we gave up: hand the slot on
            if isinstance(exc, TimeoutError):
                raise self._overloaded() from None
            raise

    def _fits(self, cost: int) -> bool:
        return (
            len(self._running_jobs) < self.max_running
            and self._reserved + cost <= self.memory_budget
        )

    def _background_may_start(self, waiter: _Waiter) -> bool:
        """No request waits, and one slot stays free for the next (unless there is only one)."""
        background = sum(job.background for job in self._running_jobs)
        return (
            not self._waiters
            and background < max(1, self.max_running - 1)
            and self._fits(waiter.cost)
        )

    def _start(self, cost: int, seconds: float, *, background: bool = False) -> _Running:
        crowd = len(self._running_jobs) + 1
        job = _Running(cost, seconds, time.monotonic(), background, crowd)
        self._running_jobs.append(job)
        self._reserved += cost
        return job

    def _finish(self, job: _Running) -> None:
        self._running_jobs.remove(job)
        self._reserved -= job.cost
        self._grant()

    def _grant(self) -> None:
        """Start waiters in arrival order while the head of the queue fits; tell those that can
        no longer start in time now (transforms run longer under load), not at their deadline."""
        while self._waiters and self._fits(self._waiters[0].cost):
            waiter = self._waiters.popleft()
            waiter.granted.set_result(self._start(waiter.cost, waiter.seconds))
        while self._background_waiters and self._background_may_start(self._background_waiters[0]):
            waiter = self._background_waiters.popleft()
            waiter.granted.set_result(self._start(waiter.cost, waiter.seconds, background=True))
        finishes = self._play_out(list(self._waiters))
        for waiter, finish in zip(list(self._waiters), finishes, strict=True):
            if finish is None:
                self._waiters.remove(waiter)
                waiter.granted.set_exception(self._overloaded())

    def _play_out(
        self, waiters: list[_Waiter], slowdown: float | None = None
    ) -> list[float | None]:
        """When each waiter should finish, in seconds from now, or None if not by its deadline.

        The queue is played out in arrival order: a waiter starts once the one ahead of it has,
        a slot is free and its memory fits beside what still runs. A running transform ends when
        its plan says, or, once past it, after as long again as it has overrun (a stall keeps
        its slot). A waiter that would finish too late takes no slot time and no memory.
        """
        pace = self._slowdown() if slowdown is None else slowdown
        now, clock = time.monotonic(), anyio.current_time()
        running = pace * self._crowding(len(self._running_jobs))
        # (seconds from now, bytes held) of each transform running, soonest first
        ends = [
            (abs(job.seconds * running - (now - job.started)), job.cost)
            for job in self._running_jobs
        ]
        heapq.heapify(ends)
        pace *= self._crowding(self.max_running)  # with a queue, every slot is busy
        reserved, start = self._reserved, 0.0
        finishes: list[float | None] = []
        for waiter in waiters:
            pending, held, at = list(ends), reserved, start  # a copy: a refusal changes nothing
            while pending and (
                pending[0][0] <= at  # over by the time the one ahead started
                or len(pending) >= self.max_running
                or held + waiter.cost > self.memory_budget
            ):
                end, cost = heapq.heappop(pending)
                at, held = max(at, end), held - cost
            finish = at + waiter.seconds * pace
            if clock + finish > waiter.deadline:
                finishes.append(None)
                continue
            heapq.heappush(pending, (finish, waiter.cost))
            ends, reserved, start = pending, held + waiter.cost, at
            finishes.append(finish)
        return finishes

    def _overloaded(self) -> ImageError:
        """503, uncacheable, with a retry hint: when the queue ahead should have drained."""
        finishes = self._play_out(list(self._waiters))
        drained = max((finish for finish in finishes if finish is not None), default=0.0)
        retry_after = min(max(math.ceil(drained), 1), 60)
        headers = {"Retry-After": str(retry_after), "Cache-Control": "no-store"}
        return ImageError(503, errors.OVERLOADED, category="overload", headers=headers)
