"""Builds the request coordinator from settings: which store, which sources, which limits."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI

from handler.contract.config import ImagesConfig, load_images_config
from handler.entry import machine
from handler.entry.settings import Settings
from handler.http.app import Oversize, create_app
from handler.model import Observer
from handler.pipeline import allocator
from handler.pipeline.animated import AnimatedOptions
from handler.request.admission import Admission
from handler.request.coordinator import Coordinator
from handler.request.first_view import Deferral, Report, report
from handler.request.revalidation import RevalidationMode
from handler.sources.base import Source
from handler.sources.chain import SourceChain
from handler.sources.origin import OriginSource
from handler.sources.public_folder import PublicFolderSource
from handler.sources.remote import RemoteSource
from handler.sources.retry import RetryingSource
from handler.stores import registry
from handler.stores.base import Store
from handler.stores.guarded import GuardedStore
from handler.stores.registry import StoreOptions
from handler.stores.s3 import VARIANTS

log = logging.getLogger(__name__)

# Running transforms may reserve this share of the memory limit; the rest is the process itself,
# stored and queued bodies, and headroom for the estimate's error.
MEMORY_BUDGET_SHARE = 0.5
# The files of a ``.next`` folder that ``--config`` accepts as the build's images config.
BUILD_CONFIG_FILES = ("required-server-files.json", "images-manifest.json")


def build_store(settings: Settings) -> Store:
    """The store ``settings.store`` names (``handler.stores.registry``), given the settings of
    the same names as its options."""
    options = {field.name: getattr(settings, field.name) for field in fields(StoreOptions)}
    return registry.build(settings.store, StoreOptions(**options))


def build_media_dir(images_config: str | None) -> Path | None:
    """The ``.next/static/media`` folder of the build the images config was read from, if any.

    That is when the config is a ``.next`` folder, or its ``required-server-files.json`` or
    ``images-manifest.json``, and the build has statically imported images.
    """
    if not images_config or images_config.lstrip().startswith("{"):
        return None
    path = Path(images_config)
    if path.name in BUILD_CONFIG_FILES and path.is_file():
        path = path.parent
    media = path / "static" / "media"
    return media if media.is_dir() else None


def build_relative_source(settings: Settings, config: ImagesConfig) -> Source:
    """Relative URLs, first hit wins: the build's ``.next/static/media`` (when the config was
    read from a build), the public folder, then S3 assets, then the app's origin."""
    chain: list[Source] = []
    media = build_media_dir(settings.images_config)
    if media is not None:
        # What the deploy uploads under _next/static/media/ in the assets bucket.
        mount = config.base_path + "/_next/static/media"
        chain.append(PublicFolderSource(media, config, mount=mount))
    if settings.public_dir:
        chain.append(PublicFolderSource(Path(settings.public_dir), config))
    if settings.assets_bucket:
        from handler.sources.s3_assets import S3AssetsSource

        chain.append(S3AssetsSource(settings.assets_bucket, settings.assets_prefix, config))
    if settings.origin:
        origin = OriginSource(settings.origin, config, timeout=settings.fetch_timeout)
        chain.append(RetryingSource(origin, max_attempts=settings.max_attempts))
    return SourceChain(chain)


def build_admission(settings: Settings) -> Admission:
    """Per process. Defaults: one transform per CPU and half the memory limit (cgroup, Lambda
    or RAM), shared out among ``serve --workers``, so N workers never run N times the machine."""
    workers = machine.worker_count(settings.workers)
    share = machine.memory_limit() * MEMORY_BUDGET_SHARE / workers
    return Admission(
        max_running=settings.max_transforms or max(1, machine.cpu_count() // workers),
        memory_budget=settings.memory_budget or int(share),
        max_queue=settings.max_queue,
    )


def build_coordinator(
    settings: Settings,
    *,
    config: ImagesConfig | None = None,
    store: Store | None = None,
    revalidation: RevalidationMode = "background",
    defer_first_view: Deferral | None = None,
    give_back_memory: bool = True,
    report_first_view: Report = report,
    isolate: bool = False,
    clock: Callable[[], float] = time.time,
) -> Coordinator:
    """``isolate``: whether transforms run in child processes when the settings do not say
    (``NEXT_IMAGE_ISOLATE_TRANSFORMS``): on for ``serve``, off on Lambda."""
    from handler.pipeline.transform import setup_libvips

    setup_libvips()
    allocator.limit_arenas()  # so memory goes back after a burst
    config = config or load_images_config(settings.images_config)
    remote = RemoteSource(
        config, timeout=settings.fetch_timeout, strict_redirects=settings.strict_redirects
    )
    admission = build_admission(settings)
    isolation = None
    if isolate if settings.isolate_transforms is None else settings.isolate_transforms:
        from handler.pipeline.isolation import IsolatedTransforms, can_have_children

        if not can_have_children():  # a pool's worker (warm): its transforms stay in it
            log.warning("transforms run in this process: a daemonic process has no children")
        else:
            isolation = IsolatedTransforms(
                config,
                children=admission.max_running,  # one child per transform slot
                transforms_per_child=settings.transforms_per_child,
            )
    return Coordinator(
        config,
        GuardedStore(store or build_store(settings), call_timeout=settings.store_timeout),
        relative=build_relative_source(settings, config),
        remote=RetryingSource(remote, max_attempts=settings.max_attempts),
        admission=admission,
        timeout=settings.timeout,
        revalidation=revalidation,
        first_view_seconds=settings.fast_first_view,
        defer_first_view=defer_first_view,
        give_back_memory=give_back_memory,
        generation=settings.deploy_generation,
        report_first_view=report_first_view,
        isolation=isolation,
        clock=clock,
        animated=AnimatedOptions(
            settings.animated, settings.animated_max_frames, settings.animated_max_pixels
        ),
    )


def build_app(
    settings: Settings,
    *,
    revalidation: RevalidationMode = "background",
    defer_first_view: Deferral | None = None,
    give_back_memory: bool = True,
    observer: Observer | None = None,
    report_first_view: Report = report,
    docs: bool = False,
    service: bool = False,
    isolate: bool = False,
) -> FastAPI:
    """The one app, for ``next-image serve`` and the Lambda handler alike.

    A ``service`` also counts its requests for ``/metrics`` (then calls ``observer``, if any).
    ``report_first_view`` logs a failure of fast first view's deferred work (Lambda: its JSON
    logger). ``isolate``: transforms in child processes unless the settings say otherwise
    (``build_coordinator``); their children stop with the app's lifespan.
    """
    coordinator = build_coordinator(
        settings,
        revalidation=revalidation,
        defer_first_view=defer_first_view,
        give_back_memory=give_back_memory,
        report_first_view=report_first_view,
        isolate=isolate,
    )
    limit = settings.max_inline_bytes
    oversize = Oversize(limit, "/" + VARIANTS) if limit is not None else None
    if not service:
        app = create_app(coordinator, observer=observer, oversize=oversize, docs=docs)
        return _closing_children(app, coordinator)
    from handler.http.metrics import PrometheusMetrics

    prometheus = PrometheusMetrics(coordinator, also=observer)
    app = create_app(coordinator, observer=prometheus, oversize=oversize, docs=docs, service=True)
    app.state.prometheus = prometheus
    app.router.lifespan_context = prometheus.around(app.router.lifespan_context)
    return _closing_children(app, coordinator)


def _closing_children(app: FastAPI, coordinator: Coordinator) -> FastAPI:
    """Stop the transform children, if any, once the app's lifespan ends."""
    isolation = coordinator.isolation
    if isolation is None:
        return app
    lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan_then_stop(app: Any) -> AsyncIterator[Any]:
        async with lifespan(app) as state:
            yield state
        await anyio.to_thread.run_sync(isolation.close)

    app.router.lifespan_context = lifespan_then_stop
    return app
