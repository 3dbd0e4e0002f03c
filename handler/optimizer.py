"""The request path behind the HTTP layer: store lookup, source fetch, transform, store write.

Cache semantics (Next's, made durable): a fresh pointer plus an existing variant is a HIT that
never touches the source; an expired pointer serves STALE and revalidates (in the background
when serving, inline where no background work survives the response, as on Lambda); anything
else is a MISS. Identical concurrent misses share one fetch and one transform.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, ParamSpec, TypeVar

import anyio

from handler import errors
from handler.config import ImagesConfig
from handler.errors import ImageError
from handler.headers import get_max_age
from handler.keys import b64url, etag_of, pointer_key, variant_key
from handler.params import ImageParams
from handler.pipeline import transform_image
from handler.sources.base import Source, Upstream
from handler.stores.base import Pointer, Store, Variant

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

CacheStatus = Literal["HIT", "MISS", "STALE"]
Revalidation = Literal["background", "inline"]


@dataclass(frozen=True)
class Served:
    variant: Variant
    variant_key: str
    max_age: int
    etag: str
    cache: CacheStatus


@dataclass
class Stats:
    """What one request did, for logs and metrics."""

    source_bytes: int = 0
    stages_ms: dict[str, float] = field(default_factory=dict)

    def timed(self, stage: str, started: float) -> None:
        self.stages_ms[stage] = round(self.stages_ms.get(stage, 0.0) + _ms_since(started), 2)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


class Optimizer:
    def __init__(
        self,
        config: ImagesConfig,
        store: Store,
        *,
        relative: Source,
        remote: Source,
        timeout: float = 30.0,
        revalidation: Revalidation = "background",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._store = store
        self._relative = relative
        self._remote = remote
        self._timeout = timeout
        self._revalidation = revalidation
        self._clock = clock
        self._inflight: dict[str, asyncio.Future[Served]] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def serve(self, params: ImageParams, stats: Stats | None = None) -> Served:
        """Answer one validated request within the time budget."""
        stats = stats or Stats()
        try:
            with anyio.fail_after(self._timeout):
                return await self._serve(params, stats)
        except TimeoutError:
            raise ImageError(504, errors.TIME_BUDGET_EXCEEDED) from None

    async def drain(self) -> None:
        """Wait for background revalidations (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _serve(self, params: ImageParams, stats: Stats) -> Served:
        started = time.perf_counter()
        pkey = pointer_key(params.href)
        pointer = await self._call(self._store.get_pointer, pkey)
        if pointer is not None:
            vkey = self._variant_key(pointer.source_hash, params)
            variant = await self._call(self._store.get_variant, vkey)
            if variant is not None:
                stats.timed("store", started)
                if self._clock() <= pointer.expire_at:
                    return self._served(variant, vkey, pointer, "HIT")
                if self._revalidation == "inline":
                    return await self._shared(
                        f"reval:{pkey}:{vkey}",
                        lambda: self._revalidate(params, pointer, variant, stats),
                    )
                self._revalidate_in_background(params, pointer, variant)
                return self._served(variant, vkey, pointer, "STALE")
        stats.timed("store", started)
        request_key = f"{params.href}\0{params.width}\0{params.quality}\0{params.mime_type}"
        return await self._shared(request_key, lambda: self._generate(params, stats))

    async def _shared(self, key: str, work: Callable[[], Awaitable[Served]]) -> Served:
        """Single-flight: concurrent callers with one key share one run of ``work``."""
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(work())
            self._inflight[key] = future
            future.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(future)

    async def _generate(self, params: ImageParams, stats: Stats) -> Served:
        upstream = await self._fetch(params, stats)
        source_hash = hashlib.sha256(upstream.body).hexdigest()
        return await self._store_new(params, upstream, source_hash, stats, cache="MISS")

    async def _fetch(
        self, params: ImageParams, stats: Stats, if_none_match: str | None = None
    ) -> Upstream:
        started = time.perf_counter()
        source = self._remote if params.is_absolute else self._relative
        upstream = await source.fetch(params.href, if_none_match=if_none_match)
        stats.timed("fetch", started)
        stats.source_bytes = len(upstream.body)
        return upstream

    async def _store_new(
        self,
        params: ImageParams,
        upstream: Upstream,
        source_hash: str,
        stats: Stats,
        cache: CacheStatus,
    ) -> Served:
        vkey = self._variant_key(source_hash, params)
        pointer = self._pointer(source_hash, upstream)
        started = time.perf_counter()
        variant = await self._call(self._store.get_variant, vkey)  # same bytes, another URL
        stats.timed("store", started)
        if variant is None:
            started = time.perf_counter()
            result = await anyio.to_thread.run_sync(
                lambda: transform_image(
                    upstream.body,
                    width=params.width,
                    quality=params.quality,
                    mime_type=params.mime_type,
                    config=self.config,
                )
            )
            stats.timed("transform", started)
            variant = Variant(result.body, result.content_type, etag_of(result.body), result.kind)
            started = time.perf_counter()
            await self._call(self._store.put_variant, vkey, variant)
            stats.timed("store", started)
        await self._call(self._store.put_pointer, pointer_key(params.href), pointer)
        return self._served(variant, vkey, pointer, cache)

    async def _revalidate(
        self, params: ImageParams, previous: Pointer, variant: Variant, stats: Stats
    ) -> Served:
        """Refresh an expired pointer: a conditional fetch; transform only if the bytes changed.

        If the source cannot be reached, the old variant is kept with Next's short max-age.
        """
        vkey = self._variant_key(previous.source_hash, params)
        pkey = pointer_key(params.href)
        try:
            upstream = await self._fetch(params, stats, if_none_match=previous.upstream_etag)
        except ImageError as exc:
            log.warning("revalidation of %s failed: %s", params.href, exc.message)
            retained = self._retained(previous)
            await self._call(self._store.put_pointer, pkey, retained)
            return self._served(variant, vkey, retained, "STALE")
        if not upstream.not_modified:
            source_hash = hashlib.sha256(upstream.body).hexdigest()
            if source_hash != previous.source_hash:
                return await self._store_new(params, upstream, source_hash, stats, cache="STALE")
        refreshed = self._pointer(previous.source_hash, upstream, previous)
        await self._call(self._store.put_pointer, pkey, refreshed)
        return self._served(variant, vkey, refreshed, "STALE")

    def _revalidate_in_background(
        self, params: ImageParams, pointer: Pointer, variant: Variant
    ) -> None:
        vkey = self._variant_key(pointer.source_hash, params)
        key = f"reval:{pointer_key(params.href)}:{vkey}"
        if key in self._inflight:
            return

        async def run() -> None:
            try:
                with anyio.fail_after(self._timeout):
                    await self._shared(
                        key, lambda: self._revalidate(params, pointer, variant, Stats())
                    )
            except ImageError as exc:
                log.warning("background revalidation of %s failed: %s", params.href, exc.message)
            except Exception:
                log.exception("background revalidation of %s failed", params.href)

        task = asyncio.ensure_future(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _pointer(
        self, source_hash: str, upstream: Upstream, previous: Pointer | None = None
    ) -> Pointer:
        ttl = self.config.minimum_cache_ttl
        if upstream.not_modified and previous is not None and upstream.cache_control is None:
            max_age = previous.max_age
        else:
            max_age = max(ttl, get_max_age(upstream.cache_control))
        raw_etag = upstream.etag or (previous.upstream_etag if previous else None)
        if raw_etag:
            etag = b64url(raw_etag.encode())
        elif previous is not None:
            etag = previous.etag
        else:
            etag = b64url(hashlib.sha256(upstream.body).digest())
        return Pointer(
            source_hash=source_hash,
            etag=etag,
            upstream_etag=raw_etag,
            max_age=max_age,
            expire_at=self._clock() + max(max_age, ttl),
        )

    def _retained(self, previous: Pointer) -> Pointer:
        """Next keeps serving the old entry after a failed refresh, with a short max-age."""
        max_age = min(max(previous.max_age or 3, 3), 30)
        expire_at = self._clock() + max(max_age, self.config.minimum_cache_ttl)
        return Pointer(
            previous.source_hash, previous.etag, previous.upstream_etag, max_age, expire_at
        )

    def _served(self, variant: Variant, vkey: str, pointer: Pointer, cache: CacheStatus) -> Served:
        optimized = variant.kind == "optimized"
        max_age = self.config.minimum_cache_ttl if variant.kind == "fallback" else pointer.max_age
        etag = variant.etag if optimized else pointer.etag
        return Served(variant, vkey, max_age, etag, cache)

    @staticmethod
    def _variant_key(source_hash: str, params: ImageParams) -> str:
        return variant_key(source_hash, params.width, params.quality, params.mime_type)

    @staticmethod
    async def _call(fn: Callable[P, T | None], *args: P.args, **kwargs: P.kwargs) -> T | None:
        """Run a blocking store call off the loop; a failing store is a miss, never an error.

        So an unreachable bucket costs a transform, not the request.
        """
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
        except Exception:
            log.exception("store call %s failed", getattr(fn, "__name__", fn))
            return None
