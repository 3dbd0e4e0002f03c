"""Relative URLs served by the Next.js app's own origin, like Next's ``fetchInternalImage``
(``packages/next/src/server/image-optimizer.ts``).

Next runs the request through its own router; over HTTP that is a plain GET with no client header
and no redirect following, a 3xx being an error (Next: 500; here 502, the origin's fault). The
origin is the operator's own app: no private-IP guard. A 404 raises ``SourceNotFound`` so that a
``SourceChain`` can try its next source (it answers Next's 404 when every source missed)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import ada_url

if TYPE_CHECKING:
    import httpx

from handler.contract import errors
from handler.contract.config import ImagesConfig
from handler.model import Upstream
from handler.sources.base import SourceNotFound
from handler.sources.http_fetch import hop_deadline, open_get, read_upstream

_HEADERS = {"accept": "*/*", "accept-encoding": "identity", "user-agent": "next-image"}


class OriginSource:
    def __init__(self, base_url: str, config: ImagesConfig, *, timeout: float = 7.0) -> None:
        self._base_url = base_url
        self._config = config
        self._timeout = timeout

    @functools.cached_property
    def _base(self) -> httpx.URL:
        import httpx  # on the first fetch, not at import (see handler.sources.http_fetch)

        return httpx.URL(self._base_url)

    @functools.cached_property
    def _prefix(self) -> bytes:
        return self._base.raw_path.split(b"?", 1)[0].rstrip(b"/")

    async def fetch(self, href: str, *, if_none_match: str | None = None) -> Upstream:
        """GET ``origin + href`` as the validator parsed it (WHATWG, percent-encoded).

        Re-parsing the raw ``href`` with another parser could read a different path out of it.
        """
        parsed = ada_url.URL(href, "http://n")
        url = self._base.copy_with(
            raw_path=self._prefix + (parsed.pathname + parsed.search).encode()
        )
        headers = dict(_HEADERS)
        if if_none_match is not None:
            headers["if-none-match"] = if_none_match
        async with hop_deadline(self._timeout), open_get([url], headers) as response:
            if response.status_code == 404:
                raise SourceNotFound(href)
            return await read_upstream(
                response,
                conditional=if_none_match is not None,
                limit=self._config.maximum_response_body,
                message=errors.INTERNAL_INVALID,
            )
