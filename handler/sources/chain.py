"""Several relative sources tried in order, e.g. the public folder, then S3, then the app origin."""

from __future__ import annotations

from collections.abc import Sequence

from handler.contract import errors
from handler.contract.errors import ImageError
from handler.model import Upstream
from handler.sources.base import Source, SourceNotFound


class SourceChain:
    """The first source that has the file wins; a miss everywhere is Next's 404.

    Next 16.4 answers a missing internal file with its status, 404 (``fetchInternalImage`` in
    ``packages/next/src/server/image-optimizer.ts``).
    """

    def __init__(self, sources: Sequence[Source]) -> None:
        self._sources = tuple(sources)

    async def fetch(self, href: str, *, if_none_match: str | None = None) -> Upstream:
        for source in self._sources:
            try:
                return await source.fetch(href, if_none_match=if_none_match)
            except SourceNotFound:
                continue
        raise ImageError(404, errors.INTERNAL_INVALID, category="upstream")
