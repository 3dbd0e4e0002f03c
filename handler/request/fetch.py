"""The source of a request: the app's own (relative URLs) or a remote host's (absolute ones).

One place that picks it, asks it (conditionally, when revalidating) and times the ``fetch``
stage, for a miss and a revalidation alike.
"""

from __future__ import annotations

import time

from handler.model import ImageParams, Stats, Upstream
from handler.sources.base import Source


class Fetch:
    def __init__(self, *, relative: Source, remote: Source) -> None:
        self._relative = relative
        self._remote = remote

    async def __call__(
        self, params: ImageParams, stats: Stats, if_none_match: str | None = None
    ) -> Upstream:
        started = time.perf_counter()
        source = self._remote if params.is_absolute else self._relative
        upstream = await source.fetch(params.href, if_none_match=if_none_match)
        stats.timed("fetch", started)
        stats.source_bytes = len(upstream.body)
        return upstream
