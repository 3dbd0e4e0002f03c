"""The request path behind the HTTP layer, told in one method: ``Coordinator.serve``.

Look up → HIT (a fresh pointer and its variant: the source is not asked) / STALE (an expired
pointer, or one written before this deploy: the variant now, revalidated: ``revalidation.py``)
/ MISS → lead (identical misses share one run, here and across processes: ``single_flight.py``)
→ source → plan → slot → transform → write (``miss.py``; a slow AVIF may get a first view:
``first_view.py``). Next's freshness rules are ``freshness.py``'s. Each step is an object only
the coordinator builds and calls; every step is bounded by the request's deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import anyio

from handler.contract import errors
from handler.contract.config import ImagesConfig
from handler.contract.errors import ImageError
from handler.model import CacheStatus, ImageParams, Pointer, Served, Stats, Variant
from handler.pipeline.animated import PASSTHROUGH, AnimatedOptions
from handler.request import first_view, freshness
from handler.request.admission import Admission
from handler.request.background import Background
from handler.request.fetch import Fetch
from handler.request.first_view import Deferral, FirstView
from handler.request.keys import pointer_key
from handler.request.miss import Miss
from handler.request.revalidation import Revalidation, RevalidationMode
from handler.request.single_flight import SingleFlight, flight_key
from handler.request.transforms import Transforms
from handler.sources.base import Source
from handler.stores.guarded import GuardedStore

if TYPE_CHECKING:
    from handler.pipeline.isolation import IsolatedTransforms


@dataclass(frozen=True)
class Found:
    """What the store holds for a request: the URL's pointer, and the variant it names."""

    pointer: Pointer | None = None
    variant_key: str = ""
    variant: Variant | None = None


class Coordinator:
    def __init__(
        self,
        config: ImagesConfig,
        store: GuardedStore,
        *,
        relative: Source,
        remote: Source,
        admission: Admission,
        timeout: float = 30.0,
        revalidation: RevalidationMode = "background",
        first_view_seconds: float = 0.0,
        defer_first_view: Deferral | None = None,
        give_back_memory: bool = True,
        generation: str = "",
        report_first_view: first_view.Report = first_view.report,
        isolation: IsolatedTransforms | None = None,
        clock: Callable[[], float] = time.time,
        animated: AnimatedOptions = PASSTHROUGH,
    ) -> None:
        """``revalidation``: ``inline`` where no work survives the response (Lambda).

        ``first_view_seconds``: an AVIF miss planned to take longer is answered with a first
        view, its AVIF deferred (by ``defer_first_view`` where no work survives the response).

        ``give_back_memory``: free heap pages go back to the system once transforms have
        stopped for a moment (a service sharing its host); off where the memory is the
        instance's own (Lambda).

        ``generation``: this deploy's (``NEXT_IMAGE_DEPLOY_GENERATION``). Pointers record it; one
        written under another generation is treated as expired: revalidated with a conditional
        request before it is trusted, so a redeploy's changed assets or config show at once.

        ``isolation``: transforms run in its child processes rather than on this process's
        threads (``handler/pipeline/isolation.py``).

        ``animated``: ``NEXT_IMAGE_ANIMATED`` and its caps (``handler/pipeline/animated.py``); part
        of the variant key of every request it applies to."""
        self.store = store
        self.admission = admission
        self.isolation = isolation
        self._timeout = timeout
        self._clock = clock
        self._background = Background()
        self._transforms = Transforms(
            config,
            admission,
            isolation=isolation,
            animated=animated,
            give_back_memory=give_back_memory,
        )
        fetch = Fetch(relative=relative, remote=remote)
        self._flights = SingleFlight(store, admission)
        self._first_view = FirstView(
            first_view_seconds,
            self._transforms,
            store,
            self._background,
            timeout=timeout,
            background_survives=revalidation == "background",
            deferral=defer_first_view,
            report=report_first_view,
        )
        self._miss = Miss(store, fetch, self._transforms, self._first_view, generation, clock)
        self._revalidation = Revalidation(
            revalidation,
            store,
            fetch,
            self._transforms,
            self._miss,
            self._flights,
            self._background,
            generation=generation,
            clock=clock,
            timeout=timeout,
        )

    @property
    def config(self) -> ImagesConfig:
        """The images config (Next's ``images``), as the transforms and the freshness rules
        read it."""
        return self._transforms.config

    @config.setter
    def config(self, config: ImagesConfig) -> None:
        """Another config for every step from now on (a test tightens its timeout)."""
        self._transforms.config = config

    async def serve(
        self, params: ImageParams, stats: Stats | None = None, *, first_view: bool = False
    ) -> Served:
        """Answer one validated request within the time budget.

        ``first_view``: a visitor waits for this answer (not a warm-up or the deferred AVIF
        itself), so a slow AVIF miss may be answered with a first view (``first_view.py``).
        """
        stats = stats or Stats()
        started = time.perf_counter()
        found = self._at_hand(params)  # look up: a hot HIT takes no thread and no timer
        if self._trusted(found) and found.variant is not None:
            stats.timed("store", started)
            return self._served(found, "HIT")
        deadline = anyio.current_time() + self._timeout
        try:
            with anyio.fail_after(self._timeout):
                found = await self._look_up(params, found)  # what was not at hand, asked once
                stats.timed("store", started)
                if found.pointer is not None and found.variant is not None:
                    if self._trusted(found):  # HIT: a fresh pointer and its variant
                        return self._served(found, "HIT")
                    return await self._revalidation.stale(  # STALE: the variant, revalidated
                        params, found.pointer, found.variant, stats, deadline
                    )
                pointer = found.pointer  # MISS: once for concurrent twins, here and elsewhere
                key = flight_key("miss", params, self._transforms.variant_key("", params))

                async def miss() -> Served:
                    self.admission.check()  # overloaded: refuse before fetching anything
                    theirs = partial(self._stored_meanwhile, params)  # another process's
                    async with self._flights.lead(key, deadline, theirs) as led_elsewhere:
                        if led_elsewhere is not None:
                            return led_elsewhere
                        plan = await self._miss.source(
                            params, pointer, stats, first_view=first_view
                        )
                        return await self._miss.answer(plan, stats, deadline)  # plan → … → write

                return await self._flights.share(key, miss, deadline)
        except TimeoutError:
            raise ImageError(504, errors.TIME_BUDGET_EXCEEDED, category="timeout") from None

    async def ensure_stored(self, served: Served) -> bool:
        """Make sure the served variant is in the store now (a redirect will point at it).

        A variant read from the store, or whose write the store confirmed, is there; otherwise
        the write is tried once more, even while the store is being skipped after failures (the
        alternative is an error). A transient fallback is never stored.
        """
        if served.stored:
            return True
        if served.transient:
            return False
        return await self.store.put_variant(served.variant_key, served.variant, required=True)

    async def drain(self) -> None:
        """Wait for background revalidations and deferred AVIFs (tests, shutdown)."""
        await self._background.drain()

    def _at_hand(self, params: ImageParams) -> Found:
        """What the store can tell without waiting (its records in memory, or in files the page
        cache holds: ``GuardedStore.pointer_now``); no thread, no timer."""
        pointer = self.store.pointer_now(pointer_key(params.href))
        if pointer is None:
            return Found()
        vkey = self._transforms.variant_key(pointer.source_hash, params)
        return Found(pointer, vkey, self.store.variant_now(vkey))

    async def _look_up(self, params: ImageParams, at_hand: Found) -> Found:
        """The rest from the store: what was at hand is not asked for again."""
        if at_hand.variant is not None:
            return at_hand
        pointer = at_hand.pointer or await self.store.get_pointer(pointer_key(params.href))
        if pointer is None:
            return Found()
        vkey = self._transforms.variant_key(pointer.source_hash, params)
        return Found(pointer, vkey, await self.store.get_variant(vkey))

    async def _stored_meanwhile(self, params: ImageParams) -> Served | None:
        """The variant another process's miss stored while this one waited for it."""
        found = await self._look_up(params, Found())
        if found.pointer is None or found.variant is None:
            return None
        if found.pointer.generation != self._miss.generation:
            return None
        return self._served(found, "MISS")

    def _trusted(self, found: Found) -> bool:
        pointer = found.pointer
        return pointer is not None and freshness.trusted(pointer, self._miss.terms, self._clock())

    def _served(self, found: Found, cache: CacheStatus) -> Served:
        pointer, variant = found.pointer, found.variant
        assert pointer is not None and variant is not None
        now = self._clock()
        return freshness.served(variant, found.variant_key, pointer, cache, self._miss.terms, now)
