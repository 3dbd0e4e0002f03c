"""The request path behind the HTTP layer: store lookup, source fetch, transform, store write.

Cache semantics (Next's, made durable): a fresh pointer plus an existing variant is a HIT that
never touches the source; an expired pointer serves STALE and revalidates (in the background
when serving, inline where no background work survives the response, as on Lambda); anything
else is a MISS. Identical concurrent misses share one fetch and one transform. The source bytes
from the app's origin or a remote host are kept in the store too, by their hash: a MISS under a
fresh pointer (a new width of an image already seen) transforms them without fetching again; an
expired pointer always asks the source. The public folder and the S3 assets bucket are as near
as the store, so their bytes are not copied into it.

A pointer written under another deploy generation (``generation``: a redeploy's hash of the
app's assets and images config) counts as expired, whatever its own expiry: the first request
after a deploy revalidates it with the same conditional request, so an unchanged source costs
one small request and no transform, and a changed one gives a new variant. Variants themselves
are content-addressed and outlive deploys.

A miss's store calls are off its critical path where they can be: the lookup for the same bytes
under another URL runs while the transform is planned, and the variant, the pointer and the source
are written together.

Every step is bounded by the request's deadline: store calls (``GuardedStore``), the fetch, the
wait for a transform slot (``Admission``) and the transform itself. Only deterministic results
are stored: a transform that timed out is served once, marked ``transient``, and forgotten.

Fast first view (off unless ``first_view_seconds`` is set): an AVIF miss whose plan says it
takes longer than that is answered with the WebP variant (produced and stored as for a WebP
request), cached for seconds only, and the AVIF is produced after the response: by a background
task here, or, where no work survives the response (Lambda), by ``defer_first_view``. Deciding
from the plan, before any encode, keeps the first visitor from paying for two encodes at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Literal, TypeGuard

import anyio

from handler.contract import errors
from handler.contract.config import ImagesConfig
from handler.contract.errors import ImageError
from handler.contract.headers import get_max_age
from handler.model import CacheStatus, ImageParams, Pointer, Served, Stats, Upstream, Variant
from handler.pipeline import animated
from handler.pipeline.allocator import release_free_memory
from handler.pipeline.animated import PASSTHROUGH, AnimatedOptions
from handler.pipeline.sniff import AVIF, WEBP
from handler.pipeline.transform import Plan, Transformed, plan_transform, run_transform
from handler.request import first_view
from handler.request.admission import Admission
from handler.request.keys import b64url, etag_of, pointer_key, variant_key
from handler.request.low_priority import LowPriorityThreads
from handler.sources.base import Source
from handler.stores.guarded import GuardedStore

if TYPE_CHECKING:
    from handler.pipeline.isolation import IsolatedTransforms

log = logging.getLogger(__name__)

IDLE_TRIM_SECONDS = 1.0  # after the last transform, how long idle before memory is trimmed
LOCK_POLL_SECONDS = 0.1  # how often a process waiting on another's miss looks for its variant
PREPARE_THREADS = 4  # hashing sources and reading their headers, ahead of a transform slot
SOURCE_KEEP_MAX_BYTES = 20_000_000  # larger sources are fetched again rather than stored
# A fast first view's WebP stands in for the AVIF this long: a CDN asks again soon after, by
# when the AVIF is stored.
FIRST_VIEW_MAX_AGE = 10
Revalidation = Literal["background", "inline"]
InStore = tuple[Literal["pointer", "source"], ...]  # records a miss need not write again
# Produces the AVIF of a fast first view later, outside this request (an asynchronous call).
Deferral = Callable[[ImageParams], Awaitable[None]]


def _variant_of(result: Transformed) -> Variant:
    return Variant(result.body, result.content_type, etag_of(result.body), result.kind)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


class Optimizer:
    def __init__(
        self,
        config: ImagesConfig,
        store: GuardedStore,
        *,
        relative: Source,
        remote: Source,
        admission: Admission,
        timeout: float = 30.0,
        revalidation: Revalidation = "background",
        first_view_seconds: float = 0.0,
        defer_first_view: Deferral | None = None,
        give_back_memory: bool = True,
        generation: str = "",
        report_first_view: first_view.Report = first_view.report,
        isolation: IsolatedTransforms | None = None,
        clock: Callable[[], float] = time.time,
        animated: AnimatedOptions = PASSTHROUGH,
    ) -> None:
        """``give_back_memory``: free heap pages go back to the system once transforms have
        stopped for a moment (a service sharing its host); off where the memory is the
        instance's own (Lambda).

        ``generation``: this deploy's (``NEXT_IMAGE_DEPLOY_GENERATION``). Pointers record it; one
        written under another generation is treated as expired: revalidated with a conditional
        request before it is trusted, so a redeploy's changed assets or config show at once.

        ``isolation``: transforms run in its child processes rather than on this process's
        threads (``handler/pipeline/isolation.py``).

        ``animated``: ``NEXT_IMAGE_ANIMATED`` and its caps (``handler/pipeline/animated.py``); part
        of
        the variant key of every request it applies to."""
        self.config = config
        self.store = store
        self.admission = admission
        self.isolation = isolation
        if give_back_memory:
            admission.on_idle = self._trim_when_idle
        self._transform_threads = LowPriorityThreads(admission.max_running, "transform")
        self._prepare_threads = LowPriorityThreads(PREPARE_THREADS, "prepare")
        self._relative = relative
        self._remote = remote
        self._timeout = timeout
        self._revalidation = revalidation
        self._first_view_seconds = first_view_seconds
        self._defer_first_view = defer_first_view
        self._generation = generation
        self._report_first_view = report_first_view
        self._clock = clock
        self._animated = animated
        self._inflight: dict[str, asyncio.Future[Served]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._producing: set[str] = set()  # variant keys a background task is producing

    async def serve(
        self,
        params: ImageParams,
        stats: Stats | None = None,
        *,
        allow_fast_first_view: bool = False,
    ) -> Served:
        """Answer one validated request within the time budget.

        ``allow_fast_first_view``: a visitor waits for this answer (not a warm-up or the
        deferred AVIF itself), so a slow AVIF miss may be answered with WebP for now.
        """
        stats = stats or Stats()
        started = time.perf_counter()
        hit = self.hit_now(params)
        if hit is not None:
            stats.timed("store", started)
            return hit
        deadline = anyio.current_time() + self._timeout
        first_view = allow_fast_first_view and self._first_view_seconds > 0
        try:
            with anyio.fail_after(self._timeout):
                return await self._serve(params, stats, deadline, first_view)
        except TimeoutError:
            raise ImageError(504, errors.TIME_BUDGET_EXCEEDED, category="timeout") from None

    def hit_now(self, params: ImageParams) -> Served | None:
        """The HIT, when the store can tell without waiting (its records in memory, or in
        files the page cache holds: ``GuardedStore.pointer_now``); None otherwise, whatever the
        answer would be. No thread, no timer: a hot hit costs a lookup or two."""
        pointer = self.store.pointer_now(pointer_key(params.href))
        if pointer is None or not self._trusted(pointer):
            return None
        vkey = self._variant_key(pointer.source_hash, params)
        variant = self.store.variant_now(vkey)
        if variant is None:
            return None
        return self._served(variant, vkey, pointer, "HIT")

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
        """Wait for background revalidations (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _serve(
        self, params: ImageParams, stats: Stats, deadline: float, first_view: bool
    ) -> Served:
        started = time.perf_counter()
        pkey = pointer_key(params.href)
        pointer = await self.store.get_pointer(pkey)
        if pointer is not None:
            vkey = self._variant_key(pointer.source_hash, params)
            variant = await self.store.get_variant(vkey)
            if variant is not None:
                stats.timed("store", started)
                # HIT: a fresh pointer and its variant; the source is not asked.
                if self._trusted(pointer):
                    return self._served(variant, vkey, pointer, "HIT")
                # STALE: the stored variant now, revalidated against the source (expired, or
                # written before this deploy).
                if self._revalidation == "inline":
                    return await self._single_flight(
                        f"reval:{pkey}:{vkey}",
                        lambda: self._revalidate(params, pointer, variant, stats, deadline),
                        deadline,
                    )
                self._revalidate_in_background(params, pointer, variant)
                return self._served(variant, vkey, pointer, "STALE")
        stats.timed("store", started)
        # MISS: fetch (or reuse the kept source), transform, store; once for concurrent twins.
        request_key = f"{params.href}\0{self._variant_key('', params)}"
        return await self._single_flight(
            request_key,
            lambda: self._generate(params, pointer, stats, deadline, first_view),
            deadline,
        )

    async def _single_flight(
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

    async def _generate(
        self,
        params: ImageParams,
        pointer: Pointer | None,
        stats: Stats,
        deadline: float,
        first_view: bool,
    ) -> Served:
        """A miss; ``pointer`` is the URL's, if it has one (its variant was just found missing).

        While that pointer is fresh, the source it names is read from the store if kept there,
        and neither the pointer nor the source is written again.
        """
        self.admission.check()  # overloaded: refuse before fetching and decoding anything
        lock_key = pointer_key(f"{params.href}\0{self._variant_key('', params)}")
        token = await self._lead_or_wait(params, lock_key, deadline)
        if isinstance(token, Served):
            return token
        try:
            known = pointer if pointer and self._trusted(pointer) else None
            if known is not None and known.source_kept:
                kept = await self._kept_source(known.source_hash, stats)
                if kept is not None:
                    return await self._transform_and_store(
                        params,
                        kept,
                        known,
                        stats,
                        "MISS",
                        deadline,
                        in_store=("pointer", "source"),
                        checked=True,
                        first_view=first_view,
                    )
            upstream = await self._fetch(params, stats)
            source_hash = await self._sha256_hex(upstream.body)
            in_store: InStore
            if known is not None and known.source_hash == source_hash:  # the bytes it names
                target, in_store = known, ("pointer",)
            else:
                target, in_store = self._pointer(source_hash, upstream), ()
            return await self._transform_and_store(
                params,
                upstream.body,
                target,
                stats,
                "MISS",
                deadline,
                in_store=in_store,
                checked=pointer is not None and pointer.source_hash == source_hash,
                first_view=first_view,
            )
        finally:
            if token:
                with anyio.CancelScope(shield=True):
                    await self.store.release(lock_key, token)

    async def _lead_or_wait(
        self, params: ImageParams, lock_key: str, deadline: float
    ) -> str | Served | None:
        """Across processes and hosts sharing a store: lead this miss, or wait for the leader's.

        Returns the lock's token (or None: lead without a lock), or the variant another process
        stored meanwhile. A leader that died leaves its lock to expire; a waiter stops waiting
        in time to do the work itself within its own budget.
        """
        while True:
            remaining = deadline - anyio.current_time()
            token = await self.store.lead(lock_key, int(max(remaining, 0.1) * 1000))
            if token != "":
                return token
            if remaining < self.admission.expected_seconds + 2 * LOCK_POLL_SECONDS:
                return None
            await anyio.sleep(LOCK_POLL_SECONDS)
            pointer = await self.store.get_pointer(pointer_key(params.href))
            if pointer is not None and pointer.generation == self._generation:
                vkey = self._variant_key(pointer.source_hash, params)
                variant = await self.store.get_variant(vkey)
                if variant is not None:
                    return self._served(variant, vkey, pointer, "MISS")

    async def _fetch(
        self, params: ImageParams, stats: Stats, if_none_match: str | None = None
    ) -> Upstream:
        started = time.perf_counter()
        source = self._remote if params.is_absolute else self._relative
        upstream = await source.fetch(params.href, if_none_match=if_none_match)
        stats.timed("fetch", started)
        stats.source_bytes = len(upstream.body)
        return upstream

    async def _kept_source(self, source_hash: str, stats: Stats) -> bytes | None:
        """The stored source with this hash; bytes that do not hash to it (another writer's, or
        damaged) are not used: the source is fetched instead."""
        started = time.perf_counter()
        body = await self.store.get_source(source_hash)
        stats.timed("store", started)
        if body is None or await self._sha256_hex(body) != source_hash:
            return None
        stats.source_bytes = len(body)
        return body

    async def _transform_and_store(
        self,
        params: ImageParams,
        body: bytes,
        pointer: Pointer,
        stats: Stats,
        cache: CacheStatus,
        deadline: float,
        *,
        in_store: InStore = (),
        checked: bool = False,
        first_view: bool = False,
    ) -> Served:
        """Transform ``body`` (unless the same bytes under another URL already have this
        variant), then store the variant, the pointer and the source.

        ``in_store``: what the store holds already, not written again (a fresh pointer; the source
        kept under it). ``checked``: this variant was just found missing: not looked up again.
        ``first_view``: a slow AVIF may be answered with WebP for now (the module's docstring).
        """
        vkey = self._variant_key(pointer.source_hash, params)
        pkey = pointer_key(params.href)
        lookup = None
        if not checked:  # overlapped with planning: both usually take milliseconds
            lookup = asyncio.ensure_future(self.store.get_variant(vkey))
        try:
            started = time.perf_counter()
            plan = await self._plan(params, body)
            stats.timed("transform", started)
            if lookup is not None:
                started = time.perf_counter()
                found = await lookup
                stats.timed("store", started)
                if found is not None:
                    await self.store.put_pointer(pkey, pointer)
                    return self._served(found, vkey, pointer, cache)
        finally:
            if lookup is not None:
                lookup.cancel()  # still running only if planning failed: no longer needed
        if first_view and self._slow_avif(plan):
            webp = await self._transform_and_store(
                replace(params, mime_type=WEBP),
                body,
                pointer,
                stats,
                cache,
                deadline,
                in_store=in_store,
            )
            await self._produce_later(params, plan, vkey)
            return replace(webp, max_age=min(webp.max_age, FIRST_VIEW_MAX_AGE))
        started = time.perf_counter()
        result = await self._run(plan, deadline)
        stats.timed("transform", started)
        variant = _variant_of(result)
        if result.transient:
            log.warning(
                "transform of %s timed out; serving the original once, uncached", params.href
            )
            return self._served(variant, vkey, pointer, cache, stored=False, transient=True)
        started = time.perf_counter()
        writes: list[Awaitable[bool]] = []
        if "pointer" not in in_store:
            writes.append(self.store.put_pointer(pkey, pointer))
        if pointer.source_kept and "source" not in in_store:
            writes.append(self.store.put_source(pointer.source_hash, body))
        stored, *_ = await asyncio.gather(self.store.put_variant(vkey, variant), *writes)
        stats.timed("store", started)
        return self._served(variant, vkey, pointer, cache, stored=stored)

    def _slow_avif(self, plan: Plan | Transformed) -> TypeGuard[Plan]:
        """An AVIF whose plan, at this machine's pace, takes longer than a first view may wait."""
        if not isinstance(plan, Plan) or plan.content_type != AVIF:
            return False
        if self._revalidation == "inline" and self._defer_first_view is None:
            return False  # nothing here could produce the AVIF after the response
        return plan.seconds * self.admission.pace > self._first_view_seconds

    async def _produce_later(self, params: ImageParams, plan: Plan, vkey: str) -> None:
        """The AVIF of a fast first view, after the response: a background transform here,
        or the deferral (an asynchronous invocation on Lambda). Failures are reported with
        their category (``handler/request/first_view.py``): the next request for it tries again."""
        if vkey in self._producing:
            return  # asked again before its AVIF is stored: that one is on its way
        log.info("fast first view of %s: WebP now, AVIF later", params.href)
        if self._revalidation == "inline":
            assert self._defer_first_view is not None
            try:
                await self._defer_first_view(params)
            except Exception as exc:
                self._report_first_view(first_view.failed("defer", params, exc))
            return

        async def produce() -> None:
            deadline = anyio.current_time() + self._timeout
            try:
                with anyio.fail_after(self._timeout):
                    result = await self._run(plan, deadline, background=True)
                    stored = not result.transient and await self.store.put_variant(
                        vkey, _variant_of(result)
                    )
                failure = first_view.unproduced(
                    params, transient=result.transient, kind=result.kind, stored=stored
                )
            except Exception as exc:  # nobody awaits this task: every failure is reported
                failure = first_view.failed("produce", params, exc)
            finally:
                self._producing.discard(vkey)
            if failure is not None:
                self._report_first_view(failure)

        self._producing.add(vkey)
        self._in_background(produce())

    async def _plan(self, params: ImageParams, source: bytes) -> Plan | Transformed:
        """Read the header: what to do, and the memory it takes (or a result needing no slot)."""
        return await self._prepare_threads.run(
            lambda: plan_transform(
                source,
                width=params.width,
                quality=params.quality,
                mime_type=params.mime_type,
                config=self.config,
                animated=self._animated_for(params),
            )
        )

    async def _run(
        self, plan: Plan | Transformed, deadline: float, *, background: bool = False
    ) -> Transformed:
        """Wait for a slot and the memory the plan needs, then transform.

        ``background``: nobody waits for it; visitors' transforms go first.
        """
        if not isinstance(plan, Plan):
            return plan
        slot = self.admission.slot(
            plan.memory, seconds=plan.seconds, deadline=deadline, background=background
        )
        async with slot:
            # The loop's clock is time.monotonic(), which the pipeline's deadline uses too.
            if self.isolation is not None:
                return await self.isolation.run(plan, deadline=deadline)
            return await self._transform_threads.run(
                lambda: run_transform(plan, self.config, deadline=deadline)
            )

    async def _sha256_hex(self, body: bytes) -> str:
        """The source's hash, off the event loop: a 5 MB photo takes ~10 ms to hash, and a
        burst of them would hold up every hit (hashlib releases the GIL while it works)."""
        return await self._prepare_threads.run(lambda: hashlib.sha256(body).hexdigest())

    def _trim_when_idle(self) -> None:
        """Give free heap pages back once the process has stayed idle for a moment: after a
        burst, not after each transform, whose pages the next one would fault in again (that
        cost ~20 ms of CPU per miss, a sixth of a WebP miss's)."""
        loop = asyncio.get_running_loop()
        loop.call_later(IDLE_TRIM_SECONDS, self._trim_if_still_idle, loop)

    def _trim_if_still_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.admission.running == 0 and self.admission.queued == 0:
            loop.run_in_executor(None, release_free_memory)

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
        vkey = self._variant_key(previous.source_hash, params)
        pkey = pointer_key(params.href)
        try:
            upstream = await self._fetch(params, stats, if_none_match=previous.upstream_etag)
        except ImageError as exc:
            log.warning("revalidation of %s failed: %s", params.href, exc.message)
            retained = self._retained(previous)
            await self.store.put_pointer(pkey, retained)
            return self._served(variant, vkey, retained, "STALE")
        if not upstream.not_modified:
            source_hash = await self._sha256_hex(upstream.body)
            if source_hash != previous.source_hash:
                changed = self._pointer(source_hash, upstream)
                return await self._transform_and_store(
                    params, upstream.body, changed, stats, "STALE", deadline
                )
        refreshed = self._pointer(previous.source_hash, upstream, previous)
        await self.store.put_pointer(pkey, refreshed)
        return self._served(variant, vkey, refreshed, "STALE")

    def _revalidate_in_background(
        self, params: ImageParams, pointer: Pointer, variant: Variant
    ) -> None:
        vkey = self._variant_key(pointer.source_hash, params)
        key = f"reval:{pointer_key(params.href)}:{vkey}"
        if key in self._inflight:
            return

        async def run() -> None:
            deadline = anyio.current_time() + self._timeout
            try:
                with anyio.fail_after(self._timeout):
                    await self._single_flight(
                        key,
                        lambda: self._revalidate(params, pointer, variant, Stats(), deadline),
                        deadline,
                    )
            except ImageError as exc:
                log.warning("background revalidation of %s failed: %s", params.href, exc.message)
            except Exception:
                log.exception("background revalidation of %s failed", params.href)

        self._in_background(run())

    def _trusted(self, pointer: Pointer) -> bool:
        """Fresh, and written under this deploy's generation: used without asking the source."""
        return self._clock() <= pointer.expire_at and pointer.generation == self._generation

    def _in_background(self, work: Coroutine[None, None, None]) -> None:
        """Run ``work`` after the response; ``drain`` waits for it."""
        task = asyncio.ensure_future(work)
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
            etag = b64url(bytes.fromhex(source_hash))  # Next: the hash of the bytes
        if upstream.not_modified and previous is not None:
            kept = previous.source_kept  # the same bytes: kept as they were
        else:
            kept = upstream.worth_keeping and len(upstream.body) <= SOURCE_KEEP_MAX_BYTES
        return Pointer(
            source_hash=source_hash,
            etag=etag,
            upstream_etag=raw_etag,
            max_age=max_age,
            expire_at=self._clock() + max(max_age, ttl),
            source_kept=kept,
            generation=self._generation,
        )

    def _retained(self, previous: Pointer) -> Pointer:
        """Next keeps serving the old entry after a failed refresh, with a short max-age."""
        max_age = min(max(previous.max_age or 3, 3), 30)
        expire_at = self._clock() + max(max_age, self.config.minimum_cache_ttl)
        return replace(previous, max_age=max_age, expire_at=expire_at)

    def _served(
        self,
        variant: Variant,
        vkey: str,
        pointer: Pointer,
        cache: CacheStatus,
        *,
        stored: bool = True,
        transient: bool = False,
    ) -> Served:
        optimized = variant.kind == "optimized"
        max_age = self.config.minimum_cache_ttl if variant.kind == "fallback" else pointer.max_age
        etag = variant.etag if optimized else pointer.etag
        fresh_for = max(pointer.expire_at - self._clock(), 0.0)
        return Served(variant, vkey, max_age, etag, cache, stored, transient, fresh_for)

    def _animated_for(self, params: ImageParams) -> AnimatedOptions:
        """What an animation may become for this request (its browser may take WebP or not)."""
        return animated.for_request(self._animated, params.mime_type, params.also_webp)

    def _variant_key(self, source_hash: str, params: ImageParams) -> str:
        suffix = animated.key_suffix(self._animated_for(params))
        return variant_key(
            source_hash, params.width, params.quality, params.mime_type, animated=suffix
        )
