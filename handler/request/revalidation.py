"""STALE: the stored variant is answered, and its expired pointer revalidated against the source.

A conditional fetch (``If-None-Match``): an unchanged source only refreshes the pointer, a
changed one is a miss answered ``STALE``; a source that cannot be reached keeps the old entry
with Next's short max-age. In the background when serving; inline where no work survives the
response (Lambda), as the request's own answer. Concurrent revalidations of one entry share a run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import anyio

from handler.contract.errors import ImageError
from handler.model import ImageParams, Pointer, Served, Stats, Variant
from handler.request import freshness
from handler.request.background import Background
from handler.request.fetch import Fetch
from handler.request.keys import pointer_key
from handler.request.miss import Miss, MissPlan
from handler.request.single_flight import SingleFlight, flight_key
from handler.request.step import Step
from handler.request.transforms import Transforms
from handler.stores.guarded import GuardedStore

log = logging.getLogger(__name__)

RevalidationMode = Literal["background", "inline"]


class Revalidation(Step):
    def __init__(
        self,
        mode: RevalidationMode,
        store: GuardedStore,
        fetch: Fetch,
        transforms: Transforms,
        miss: Miss,
        flights: SingleFlight,
        background: Background,
        *,
        generation: str,
        clock: Callable[[], float],
        timeout: float,
    ) -> None:
        super().__init__(store, fetch, transforms, generation, clock)
        self.mode = mode
        self._miss = miss
        self._flights = flights
        self._background = background
        self._timeout = timeout

    async def stale(
        self,
        params: ImageParams,
        pointer: Pointer,
        variant: Variant,
        stats: Stats,
        deadline: float,
    ) -> Served:
        """The answer to a request whose stored variant's pointer is no longer trusted."""
        vkey = self._transforms.variant_key(pointer.source_hash, params)
        key = flight_key("revalidation", params, vkey)
        if self.mode == "inline":
            return await self._flights.share(
                key, lambda: self._revalidate(params, pointer, variant, stats, deadline), deadline
            )
        if not self._flights.running(key):
            self._background.start(self._in_background(key, params, pointer, variant))
        return self._served(variant, vkey, pointer, "STALE")

    async def _in_background(
        self, key: str, params: ImageParams, pointer: Pointer, variant: Variant
    ) -> None:
        deadline = anyio.current_time() + self._timeout
        try:
            with anyio.fail_after(self._timeout):
                await self._flights.share(
                    key,
                    lambda: self._revalidate(params, pointer, variant, Stats(), deadline),
                    deadline,
                )
        except ImageError as exc:
            log.warning("background revalidation of %s failed: %s", params.href, exc.message)
        except Exception:
            log.exception("background revalidation of %s failed", params.href)

    async def _revalidate(
        self,
        params: ImageParams,
        previous: Pointer,
        variant: Variant,
        stats: Stats,
        deadline: float,
    ) -> Served:
        """Refresh an expired pointer: a conditional fetch; transform only if the bytes changed.

        If the source cannot be reached, the old variant is kept with Next's short max-age.
        """
        vkey = self._transforms.variant_key(previous.source_hash, params)
        pkey = pointer_key(params.href)
        try:
            upstream = await self._fetch(params, stats, if_none_match=previous.upstream_etag)
        except ImageError as exc:
            log.warning("revalidation of %s failed: %s", params.href, exc.message)
            retained = freshness.retained(previous, self.terms, self._clock())
            await self._store.put_pointer(pkey, retained)
            return self._served(variant, vkey, retained, "STALE")
        if not upstream.not_modified:
            source_hash = await self._transforms.sha256_hex(upstream.body)
            if source_hash != previous.source_hash:
                changed = freshness.pointer_for(source_hash, upstream, self.terms, self._clock())
                miss = MissPlan(params, upstream.body, changed, cache="STALE")
                return await self._miss.answer(miss, stats, deadline)
        now = self._clock()
        refreshed = freshness.pointer_for(previous.source_hash, upstream, self.terms, now, previous)
        await self._store.put_pointer(pkey, refreshed)
        return self._served(variant, vkey, refreshed, "STALE")
