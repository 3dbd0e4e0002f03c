"""Words every layer uses: what a cache lookup found, what a variant is, what one request did.

Kept here, apart from any layer, so that the pure pipeline, the stores, the request path and the
HTTP layer can all name them without importing one another.
"""

from __future__ import annotations

from collections.abc import Callable
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
