"""The records every layer shares: the validated request, what a source loaded, what a store
keeps, what a request answered and what it did.

Kept here, apart from any layer and free of pyvips and I/O, so that the pipeline, the sources,
the stores, the request path and the HTTP layer name them without importing one another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypedDict

if TYPE_CHECKING:
    from starlette.requests import Request

CacheStatus = Literal["HIT", "MISS", "STALE"]  # the X-Nextjs-Cache header
# optimized: transformed; original: passed through as Next does (animated, SVG, ICO...);
# fallback: the original bytes because the transform failed.
VariantKind = Literal["optimized", "original", "fallback"]


class RequestRecord(TypedDict, total=False):
    """One ``/_next/image`` request, for its log line and its metrics."""

    query: str
    url: str
    w: int
    q: int
    format: str
    cache: CacheStatus
    output_bytes: int
    source_bytes: int
    status: int
    stages_ms: dict[str, float]
    total_ms: float
    error: str
    error_category: str


# Told of every /_next/image request once it is answered: the metrics, the Lambda log line.
Observer = Callable[["Request", RequestRecord], None]


@dataclass(frozen=True)
class ImageParams:
    href: str  # raw for relative URLs, WHATWG-normalised for absolute ones (Next's rule)
    is_absolute: bool
    is_static: bool  # /_next/static/media or /_next/static/immutable/media: immutable caching
    width: int
    quality: int
    mime_type: str  # negotiated output type from Accept, or "" (keep the source's type)
    # AVIF was negotiated and WebP would have been too (in ``formats``, named by Accept): what an
    # animation may become (``NEXT_IMAGE_ANIMATED=webp``), as libvips writes no animated AVIF.
    also_webp: bool = False


@dataclass(frozen=True)
class Upstream:
    """A loaded source: its bytes plus the upstream caching headers Next.js reads.

    ``not_modified`` is set (and ``body`` empty) when a conditional fetch with ``if_none_match``
    got a 304: the caller keeps the bytes it already has.

    ``worth_keeping`` is False for a source as near as the variant store (the public folder on
    this host's disk, the S3 assets bucket beside the variant bucket): reading it again costs
    what reading a kept copy would, so the bytes are not copied into the store.
    """

    body: bytes
    cache_control: str | None = None
    etag: str | None = None  # the raw upstream ETag header value
    not_modified: bool = False
    worth_keeping: bool = True


@dataclass(frozen=True)
class Pointer:
    source_hash: str  # hex sha256 of the source bytes
    etag: str  # Next's upstreamEtag: base64url of the upstream ETag header, or of the bytes' sha256
    upstream_etag: str | None  # the raw upstream ETag header, for conditional revalidation
    max_age: int  # max(minimumCacheTTL, upstream max-age): the Cache-Control max-age
    expire_at: float  # epoch seconds
    # The source bytes were kept in the store under ``source_hash``: False for a source as near
    # as the store, or too large, whose new widths fetch it again without asking the store.
    source_kept: bool = True
    # The deploy generation of the process that wrote it (``NEXT_IMAGE_DEPLOY_GENERATION``): a
    # pointer of another generation is revalidated before it is trusted, whatever its expiry.
    generation: str = ""


@dataclass(frozen=True)
class Variant:
    body: bytes
    content_type: str
    etag: str  # base64url(sha256(body)) for optimized output; the pointer's etag otherwise
    kind: VariantKind


@dataclass(frozen=True)
class Served:
    variant: Variant
    variant_key: str
    max_age: int
    etag: str
    cache: CacheStatus
    stored: bool = True  # the variant is known to be in the store now (read, or write confirmed)
    transient: bool = False  # a timeout's fallback: must not be cached by anyone
    fresh_for: float = 0.0  # seconds the pointer stays fresh from now (0 once stale)


@dataclass
class Stats:
    """What one request did, for logs and metrics."""

    source_bytes: int = 0
    stages_ms: dict[str, float] = field(default_factory=dict)

    def timed(self, stage: str, started: float) -> None:
        self.stages_ms[stage] = round(self.stages_ms.get(stage, 0.0) + _ms_since(started), 2)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
