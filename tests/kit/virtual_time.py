"""An asyncio event loop on virtual time, for tests of timing logic that must not depend on how
fast or loaded the machine is.

The loop's clock (``loop.time()``, so ``anyio.current_time()`` and every ``sleep``, timeout and
``call_later``) starts at 0 and moves only when every task is blocked: then it jumps straight to
the next scheduled wake-up, as trio's ``MockClock(autojump_threshold=0)`` does. A test that
sleeps 2 s takes no time, and a task that is refused "at once" is refused at exactly the moment it
asked. ``all_blocked()`` returns once every other task is waiting (trio's
``wait_all_tasks_blocked``): the step that a short real sleep only hoped to give.

Use it through anyio's pytest plugin: ``anyio_backend`` returning
``("asyncio", {"loop_factory": VirtualTimeLoop})``. Threads do not mix with it (the clock would
jump while a thread works), so code under test must not wait on threads.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

HANG_SECONDS = 60.0  # real seconds with every task blocked and nothing scheduled: a deadlock


class _VirtualSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The loop's selector: polls without blocking, and instead of waiting for the next timer,
    moves the clock to it."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.idle_waiters: list[asyncio.Future[None]] = []

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        ready: list[tuple[Any, int]] = super().select(0)
        if ready or timeout == 0:  # I/O to handle, or a callback ready or due: not idle
            return ready
        waiters, self.idle_waiters = self.idle_waiters, []
        if any(not waiter.done() for waiter in waiters):
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            return ready  # every task was blocked: those waiting for that go on, time stays
        if timeout is None:  # nothing scheduled at all: only I/O could wake a task
            ready = super().select(HANG_SECONDS)
            if not ready:
                raise RuntimeError("every task is blocked and no timer is scheduled: a deadlock")
            return ready
        self.now += timeout
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


async def all_blocked() -> None:
    """Return once every other task is blocked (on an event, a lock, a queue or the clock)."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop), "needs the VirtualTimeLoop (see anyio_backend)"
    waiter: asyncio.Future[None] = loop.create_future()
    loop._virtual.idle_waiters.append(waiter)
    await waiter


def monotonic() -> float:
    """``time.monotonic`` for code under test that reads it beside the loop's clock: the
    running loop's time."""
    return asyncio.get_running_loop().time()
