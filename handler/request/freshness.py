"""Next's freshness rules, as pure functions: when a pointer is trusted, what a fetched source's
pointer says (max-age, ETag, expiry), what a failed refresh keeps, and the answer a variant
and its pointer make.

Pure (the time is an argument, the terms a record) so that each rule is read, and tested, on
its own; the steps of the request path call them with their clock's ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from handler.contract.headers import get_max_age
from handler.model import CacheStatus, Pointer, Served, Upstream, Variant
from handler.request.keys import b64url

SOURCE_KEEP_MAX_BYTES = 20_000_000  # larger sources are fetched again rather than stored


@dataclass(frozen=True)
class Terms:
    """What freshness depends on besides the time: ``minimumCacheTTL`` and this deploy's
    generation (``NEXT_IMAGE_DEPLOY_GENERATION``)."""

    ttl: int
    generation: str = ""


def trusted(pointer: Pointer, terms: Terms, now: float) -> bool:
    """Fresh, and written under this deploy's generation: used without asking the source."""
    return now <= pointer.expire_at and pointer.generation == terms.generation


def pointer_for(
    source_hash: str, upstream: Upstream, terms: Terms, now: float, previous: Pointer | None = None
) -> Pointer:
    """The pointer to a source just fetched (``previous``: the one it refreshes, if any)."""
    ttl = terms.ttl
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
        expire_at=now + max(max_age, ttl),
        source_kept=kept,
        generation=terms.generation,
    )


def retained(previous: Pointer, terms: Terms, now: float) -> Pointer:
    """Next keeps serving the old entry after a failed refresh, with a short max-age."""
    max_age = min(max(previous.max_age or 3, 3), 30)
    return replace(previous, max_age=max_age, expire_at=now + max(max_age, terms.ttl))


def served(
    variant: Variant,
    vkey: str,
    pointer: Pointer,
    cache: CacheStatus,
    terms: Terms,
    now: float,
    *,
    stored: bool = True,
    transient: bool = False,
) -> Served:
    """The answer: Next's max-age (``minimumCacheTTL`` for a fallback) and ETag (the variant's
    own for optimized bytes, the source's otherwise)."""
    optimized = variant.kind == "optimized"
    max_age = terms.ttl if variant.kind == "fallback" else pointer.max_age
    etag = variant.etag if optimized else pointer.etag
    fresh_for = max(pointer.expire_at - now, 0.0)
    return Served(variant, vkey, max_age, etag, cache, stored, transient, fresh_for)
