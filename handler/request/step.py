"""What the miss and the revalidation share: the store, the fetch, the transforms, the freshness
terms and the clock, and the answer they make of a stored or new variant."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from handler.model import CacheStatus, Pointer, Served, Variant
from handler.request import freshness
from handler.request.fetch import Fetch
from handler.request.freshness import Terms
from handler.request.transforms import Transforms
from handler.stores.guarded import GuardedStore


@dataclass(eq=False)
class Step:
    """A step of the request path that reads the source and writes the store."""

    _store: GuardedStore
    _fetch: Fetch
    _transforms: Transforms
    terms: Terms
    _clock: Callable[[], float]

    def _served(
        self, variant: Variant, vkey: str, pointer: Pointer, cache: CacheStatus, **flags: bool
    ) -> Served:
        """``freshness.served`` now, under these terms (``flags``: ``stored``, ``transient``)."""
        return freshness.served(variant, vkey, pointer, cache, self.terms, self._clock(), **flags)
