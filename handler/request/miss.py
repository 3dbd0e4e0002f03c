"""A miss: source → plan → slot → transform → write.

``source`` finds the bytes (kept in the store under a fresh pointer, else fetched) and says, in a
``MissPlan``, what the store holds already; ``answer`` plans the transform while it looks for
the same bytes' variant under another URL, waits for a slot, transforms, and writes the variant,
the pointer and the source together. A slow AVIF may be answered with a first view instead: the
WebP planned, transformed and written the same way, the AVIF deferred (``first_view.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Literal

from handler.model import CacheStatus, ImageParams, Pointer, Served, Stats, Variant
from handler.pipeline.transform import Plan, Transformed
from handler.request import freshness
from handler.request.fetch import Fetch
from handler.request.first_view import FirstView
from handler.request.keys import pointer_key
from handler.request.step import Step
from handler.request.transforms import Transforms, variant_of
from handler.stores.guarded import GuardedStore

log = logging.getLogger(__name__)

InStore = tuple[Literal["pointer", "source"], ...]  # records a miss need not write again


@dataclass(frozen=True)
class MissPlan:
    """What a miss knows once it has its source: the bytes, and the pointer to store them under.

    ``in_store``: what the store holds already, not written again (a fresh pointer; the source
    kept under it). ``checked``: this variant was just found missing: not looked up again.
    ``first_view``: a slow AVIF may be answered with a first view (``first_view.py``).
    """

    params: ImageParams
    body: bytes
    pointer: Pointer
    cache: CacheStatus = "MISS"
    in_store: InStore = ()
    checked: bool = False
    first_view: bool = False

    def stand_in(self) -> MissPlan:
        """The first view's miss: the same bytes as WebP, looked up, never a first view itself."""
        params = FirstView.stand_in(self.params)
        return replace(self, params=params, checked=False, first_view=False)


class Miss(Step):
    def __init__(
        self,
        store: GuardedStore,
        fetch: Fetch,
        transforms: Transforms,
        first_view: FirstView,
        generation: str,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(store, fetch, transforms, generation, clock)
        self._first_view = first_view

    async def source(
        self, params: ImageParams, pointer: Pointer | None, stats: Stats, *, first_view: bool
    ) -> MissPlan:
        """The source; ``pointer`` is the URL's, if it has one (its variant was just found
        missing). While that pointer is fresh, the source it names is read from the store if kept
        there, and neither the pointer nor the source is written again."""
        fresh = pointer is not None and freshness.trusted(pointer, self.terms, self._clock())
        known = pointer if fresh else None
        if known is not None and known.source_kept:
            kept = await self._kept_source(known.source_hash, stats)
            if kept is not None:
                in_store: InStore = ("pointer", "source")
                return MissPlan(params, kept, known, "MISS", in_store, True, first_view)
        upstream = await self._fetch(params, stats)
        source_hash = await self._transforms.sha256_hex(upstream.body)
        if known is not None and known.source_hash == source_hash:  # the bytes it names
            target, in_store = known, ("pointer",)
        else:
            now = self._clock()
            target, in_store = freshness.pointer_for(source_hash, upstream, self.terms, now), ()
        checked = pointer is not None and pointer.source_hash == source_hash
        return MissPlan(params, upstream.body, target, "MISS", in_store, checked, first_view)

    async def answer(self, miss: MissPlan, stats: Stats, deadline: float) -> Served:
        """Plan → slot → transform → write; for a slow AVIF that may have a first view, the
        WebP's answer now and the AVIF deferred."""
        planned = await self._plan(miss, stats)
        if isinstance(planned, Served):
            return planned  # the same bytes under another URL: already transformed
        if not (miss.first_view and self._first_view.too_slow(planned)):
            return await self._transform_and_write(miss, planned, stats, deadline)
        stand_in = miss.stand_in()
        webp = await self._plan(stand_in, stats)
        if not isinstance(webp, Served):
            webp = await self._transform_and_write(stand_in, webp, stats, deadline)
        vkey = self._variant_key(miss)
        if not self._first_view.pending(miss.params, vkey):
            log.info("fast first view of %s: WebP now, AVIF later", miss.params.href)
        await self._first_view.defer(miss.params, planned, vkey)
        return self._first_view.answer(webp)

    async def _kept_source(self, source_hash: str, stats: Stats) -> bytes | None:
        """The stored source with this hash; bytes that do not hash to it (another writer's, or
        damaged) are not used: the source is fetched instead."""
        started = time.perf_counter()
        body = await self._store.get_source(source_hash)
        stats.timed("store", started)
        if body is None or await self._transforms.sha256_hex(body) != source_hash:
            return None
        stats.source_bytes = len(body)
        return body

    async def _plan(self, miss: MissPlan, stats: Stats) -> Plan | Transformed | Served:
        """The plan; unless ``checked``, the variant is looked up meanwhile (both usually take
        milliseconds), and if the same bytes under another URL have it, that is the answer."""
        vkey = self._variant_key(miss)
        lookup: asyncio.Future[Variant | None] | None = None
        if not miss.checked:
            lookup = asyncio.ensure_future(self._store.get_variant(vkey))
        try:
            started = time.perf_counter()
            plan = await self._transforms.plan(miss.params, miss.body)
            stats.timed("transform", started)
            if lookup is not None:
                started = time.perf_counter()
                found = await lookup
                stats.timed("store", started)
                if found is not None:
                    await self._store.put_pointer(pointer_key(miss.params.href), miss.pointer)
                    return self._served(found, vkey, miss.pointer, miss.cache)
        finally:
            if lookup is not None:
                lookup.cancel()  # still running only if planning failed: no longer needed
        return plan

    async def _transform_and_write(
        self, miss: MissPlan, plan: Plan | Transformed, stats: Stats, deadline: float
    ) -> Served:
        """Wait for a slot, transform, then write the variant, the pointer and the source
        together (what ``in_store`` names is not written again)."""
        vkey = self._variant_key(miss)
        started = time.perf_counter()
        result = await self._transforms.run(plan, deadline)
        stats.timed("transform", started)
        variant = variant_of(result)
        if result.transient:
            log.warning(
                "transform of %s timed out; serving the original once, uncached", miss.params.href
            )
            return self._served(
                variant, vkey, miss.pointer, miss.cache, stored=False, transient=True
            )
        started = time.perf_counter()
        pointer = miss.pointer
        writes: list[Awaitable[bool]] = []
        if "pointer" not in miss.in_store:
            writes.append(self._store.put_pointer(pointer_key(miss.params.href), pointer))
        if pointer.source_kept and "source" not in miss.in_store:
            writes.append(self._store.put_source(pointer.source_hash, miss.body))
        stored, *_ = await asyncio.gather(self._store.put_variant(vkey, variant), *writes)
        stats.timed("store", started)
        return self._served(variant, vkey, miss.pointer, miss.cache, stored=stored)

    def _variant_key(self, miss: MissPlan) -> str:
        return self._transforms.variant_key(miss.pointer.source_hash, miss.params)
