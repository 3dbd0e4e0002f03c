"""What the miss and the revalidation share: the store, the fetch, the transforms, this deploy's
generation and the clock; the freshness terms they follow, and the answer they make of a stored
or new variant."""

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
    generation: str
    _clock: Callable[[], float]

    @property
    def terms(self) -> Terms:
        """Next's freshness terms: the images config's ``minimumCacheTTL`` as the transforms
        hold it now, and this deploy's generation (``NEXT_IMAGE_DEPLOY_GENERATION``)."""
        return Terms(self._transforms.config.minimum_cache_ttl, self.generation)

    def _served(
        self, variant: Variant, vkey: str, pointer: Pointer, cache: CacheStatus, **flags: bool
    ) -> Served:
        """``freshness.served`` now, under these terms (``flags``: ``stored``, ``transient``)."""
        return freshness.served(variant, vkey, pointer, cache, self.terms, self._clock(), **flags)
