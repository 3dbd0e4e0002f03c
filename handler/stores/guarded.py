"""The optimizer's view of a blocking store: off the event loop, bounded in time, never an error.

A store is a cache: failing, slow or hung, it must still let the request be answered (a miss costs
a transform). Each call runs on the store's own threads, gives up after ``call_timeout`` or the
request's deadline, and counts as a miss or an unconfirmed write; a circuit breaker skips the
store for ``cooldown`` after ``failure_threshold`` failures in a row, or at once after a hung call.
So a request pays at most one store timeout (docs/architecture.md, "A store is a cache")."""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, Protocol, TypeVar, runtime_checkable

import anyio

from handler.model import Pointer, Variant
from handler.stores.base import Locking, Store

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

STORE_THREADS = 32


@runtime_checkable
class AwaitedReads(Protocol):
    """Optional: a store whose reads can be awaited on the event loop (Redis's asyncio
    client), which costs a hit about a third of a blocking read's thread hop there and back."""

    async def await_pointer(self, key: str) -> Pointer | None: ...

    async def await_variant(self, key: str) -> Variant | None: ...


@runtime_checkable
class MemoryTier(Protocol):
    """Optional: a store that keeps recent records in memory (``TieredStore``) answers those on
    the event loop, without the thread hop that its other calls need. Its ``cached_*`` calls
    never wait for a disk or a network (a ``stat``, or a read of what the page cache holds,
    at most) and return None whenever only a blocking call could tell."""

    def cached_pointer(self, key: str) -> Pointer | None: ...

    def cached_variant(self, key: str) -> Variant | None: ...


class GuardedStore:
    def __init__(
        self,
        store: Store,
        *,
        call_timeout: float = 3.0,
        failure_threshold: int = 3,
        cooldown: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._tier = store if isinstance(store, MemoryTier) else None
        self._awaited = store if isinstance(store, AwaitedReads) else None
        self._in_process = bool(getattr(store, "in_process", False))
        self._call_timeout = call_timeout
        self._failure_threshold = max(1, failure_threshold)
        self._cooldown = cooldown
        self._clock = clock
        self._limiter = anyio.CapacityLimiter(STORE_THREADS)
        self._failures = 0
        self._open_until = 0.0
        self._running: dict[int, tuple[str, float]] = {}  # call id: (operation, started)
        self._call_ids = itertools.count()
        self._idle = threading.Condition()
        # Told the operation's name at every failed call, for a metric of store errors.
        self.on_failure: Callable[[str], None] | None = None

    async def get_pointer(self, key: str) -> Pointer | None:
        awaited = self._awaited.await_pointer if self._awaited else None
        return self.pointer_now(key) or await self._read(self.store.get_pointer, awaited, key)

    async def get_variant(self, key: str) -> Variant | None:
        awaited = self._awaited.await_variant if self._awaited else None
        return self.variant_now(key) or await self._read(self.store.get_variant, awaited, key)

    def pointer_now(self, key: str) -> Pointer | None:
        """The pointer if the store has it at hand (a ``MemoryTier``'s, or an ``in_process``
        store's); None when only a call in a thread could tell."""
        tier = self._tier
        return self._at_hand(tier.cached_pointer if tier else self.store.get_pointer, key)

    def variant_now(self, key: str) -> Variant | None:
        """As ``pointer_now``, for a variant."""
        tier = self._tier
        return self._at_hand(tier.cached_variant if tier else self.store.get_variant, key)

    def _at_hand(self, lookup: Callable[[str], T | None], key: str) -> T | None:
        """A lookup that never waits (memory, or a file the page cache holds), on the event
        loop; a failure is only a None here (the call in a thread counts it)."""
        if self._tier is None and not (self._in_process and self.available):
            return None  # only a call in a thread could tell
        try:
            return lookup(key)
        except Exception:
            return None

    async def put_pointer(self, key: str, pointer: Pointer) -> bool:
        """True once the store confirmed the write."""
        return (
            await self._call_or_miss(_confirmed(self.store.put_pointer), key, pointer) is not None
        )

    async def put_variant(self, key: str, variant: Variant, *, required: bool = False) -> bool:
        """True once the store confirmed the write.

        ``required``: the answer cannot be given without it (an oversize variant's redirect),
        so it is tried even while the breaker is open, bounded as any call; the alternative is
        an error anyway. Confirmed, it closes the breaker: the store is back, and the requests
        after it use it again instead of waiting out the cooldown.
        """
        put = _confirmed(self.store.put_variant)
        if not required or self.available:
            return await self._call_or_miss(put, key, variant) is not None
        confirmed = await self._call(put, key, variant) is not None
        if confirmed and not self.available:
            self._open_until = 0.0
            log.info("store available again: %s confirmed; no longer skipped", put.__name__)
        return confirmed

    async def get_source(self, key: str) -> bytes | None:
        return await self._call_or_miss(self.store.get_source, key)

    async def put_source(self, key: str, body: bytes) -> bool:
        """True once the store confirmed the write."""
        return await self._call_or_miss(_confirmed(self.store.put_source), key, body) is not None

    async def lead(self, key: str, ttl_ms: int) -> str | None:
        """Try to lead a miss shared by processes or hosts (a ``Locking`` store's lock).

        A token when this process leads (give it back with ``release``); ``""`` while another
        holds the lock; None when the store cannot lock (no ``Locking``, or it failed), so the
        caller leads without one.
        """
        store = self.store
        if not isinstance(store, Locking):
            return None

        def try_lock() -> str:  # named: failures are logged and counted by operation name
            return store.try_lock(key, ttl_ms) or ""

        return await self._call_or_miss(try_lock)

    async def release(self, key: str, token: str) -> None:
        store = self.store
        if isinstance(store, Locking):
            await self._call_or_miss(_confirmed(store.unlock), key, token)

    async def ready(self) -> bool:
        """Whether the store answers a ping within the call timeout (for ``/readyz``)."""
        return await self._call_or_miss(_confirmed(self.store.ping)) is not None

    @property
    def available(self) -> bool:
        """False while the breaker is open."""
        return self._clock() >= self._open_until

    def wait_idle(self, timeout: float) -> bool:
        """Block until no store call is running in a thread (abandoned ones included)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._running, timeout)

    def running(self, since: float = 0.0) -> list[tuple[str, float]]:
        """The store calls running in a thread now (abandoned ones included) that started at or
        after ``since`` (``time.monotonic()``): operation and seconds running, longest first."""
        now = time.monotonic()
        with self._idle:
            calls = [(n, now - at) for n, at in self._running.values() if at >= since]
        return sorted(calls, key=lambda call: -call[1])

    async def _call_or_miss(
        self, fn: Callable[P, T | None], *args: P.args, **kwargs: P.kwargs
    ) -> T | None:
        """The store call, bounded in time; a failure or a timeout is a miss (None), counted
        by the breaker. None at once while the breaker is open."""
        if not self.available:
            return None
        return await self._call(fn, *args, **kwargs)

    async def _call(self, fn: Callable[P, T | None], *args: P.args, **kwargs: P.kwargs) -> T | None:
        """``_call_or_miss`` whether or not the breaker is open."""
        name = getattr(fn, "__name__", "call")
        call = functools.partial(self._tracked, name, functools.partial(fn, *args, **kwargs))
        if self._in_process:  # a dict lookup: a thread hop (or a timeout) would cost more
            return await self._counted(fn, functools.partial(_at_once, call), bounded=False)
        return await self._counted(
            fn,
            functools.partial(
                anyio.to_thread.run_sync, call, abandon_on_cancel=True, limiter=self._limiter
            ),
        )

    async def _read(
        self,
        call: Callable[[str], T | None],
        awaited: Callable[[str], Awaitable[T | None]] | None,
        key: str,
    ) -> T | None:
        """A read not at hand, as ``_call_or_miss``; awaited on the event loop where the store
        can (``AwaitedReads``): no thread, and past the call timeout it is cancelled and
        counted as a hung call."""
        if awaited is None:
            return await self._call_or_miss(call, key)
        if not self.available:
            return None
        return await self._counted(call.__name__, functools.partial(awaited, key))

    async def _counted(
        self,
        fn: Callable[..., object] | str,
        start: Callable[[], Awaitable[T | None]],
        *,
        bounded: bool = True,
    ) -> T | None:
        """Await ``start()`` (within the call timeout if ``bounded``): a failure or a timeout is
        a miss (None), counted by the breaker; an answer resets the count."""
        try:
            with anyio.fail_after(self._call_timeout) if bounded else contextlib.nullcontext():
                result = await start()
        except TimeoutError:
            self._failed(fn, f"no answer within {self._call_timeout:g} s", hung=True)
            return None
        except Exception as exc:
            self._failed(fn, repr(exc))
            return None
        self._failures = 0
        return result

    def _tracked(self, name: str, call: Callable[[], T]) -> T:
        """Runs in the worker thread: counted until it really ends, even once abandoned."""
        call_id = next(self._call_ids)
        with self._idle:
            self._running[call_id] = (name, time.monotonic())
        try:
            return call()
        finally:
            with self._idle:
                del self._running[call_id]
                self._idle.notify_all()

    def _failed(self, fn: Callable[..., object] | str, reason: str, *, hung: bool = False) -> None:
        """Count a failure of ``fn`` (or the operation so named); open the breaker after
        ``failure_threshold`` in a row, or at once for a call that got no answer (``hung``)."""
        self._failures += 1
        name = fn if isinstance(fn, str) else getattr(fn, "__name__", "call")
        if self.on_failure is not None:
            self.on_failure(name)
        if not hung and self._failures < self._failure_threshold:
            log.warning("store %s failed (%s); answering without the cache", name, reason)
            return
        if self.available:
            if hung:
                why = f": {name} had {reason}"
            else:
                why = f" after {self._failures} failures in a row (last: {name} {reason})"
            log.warning("store unavailable%s; skipping it for %g s", why, self._cooldown)
        self._open_until = self._clock() + self._cooldown


def _confirmed(put: Callable[P, None]) -> Callable[P, bool]:
    """A write that returns normally is confirmed; ``True`` tells it apart from a failure."""

    @functools.wraps(put)
    def call(*args: P.args, **kwargs: P.kwargs) -> bool:
        put(*args, **kwargs)
        return True

    return call


async def _at_once(call: Callable[[], T]) -> T:
    return call()
