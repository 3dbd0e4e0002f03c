"""Retry a source on transient upstream failures (timeouts, resets, 5xx), never on a client error.

Each attempt may take a full source timeout, so the caller should still bound the total time.
"""

from __future__ import annotations

import random

import anyio

from handler.contract.errors import ImageError
from handler.model import Upstream
from handler.sources.base import Source


class RetryingSource:
    def __init__(self, inner: Source, *, max_attempts: int = 3, base_delay: float = 0.2) -> None:
        self._inner = inner
        self._max_attempts = max(1, max_attempts)
        self._base_delay = base_delay

    async def fetch(self, href: str, *, if_none_match: str | None = None) -> Upstream:
        attempt = 1
        while True:
            try:
                return await self._inner.fetch(href, if_none_match=if_none_match)
            except ImageError as exc:
                if not exc.transient or exc.status < 500 or attempt >= self._max_attempts:
                    raise
            await anyio.sleep(self._delay(attempt))
            attempt += 1

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with jitter, so many instances do not retry in lockstep."""
        ceiling = self._base_delay * (1 << (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)
