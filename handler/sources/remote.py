"""Absolute http(s) URLs, fetched as Next 16.4.6's ``fetchExternalImage`` does
(``packages/next/src/server/image-optimizer.ts``, ``is-private-ip.ts``).

Each hop resolves the hostname once, refuses private addresses (unless
``dangerouslyAllowLocalIP``) and connects to the checked IP while ``Host``, SNI and certificate
checks keep the hostname, so a rebinding DNS answer cannot move the connection. Redirects are
followed by hand, each hop checked; ``strict_redirects`` also holds each hop to
``remotePatterns``/``domains`` (Next does not)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import ada_url

if TYPE_CHECKING:
    import httpx

from handler.contract import errors
from handler.contract.config import ImagesConfig
from handler.contract.errors import ImageError
from handler.contract.patterns import has_remote_match
from handler.model import Upstream
from handler.sources import netguard
from handler.sources.http_fetch import first_header, hop_deadline, open_get, read_upstream

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class RemoteSource:
    """The guarded client for remote URLs; the caller has already matched ``remotePatterns``."""

    def __init__(
        self,
        config: ImagesConfig,
        *,
        timeout: float = 7.0,
        resolver: netguard.Resolver = netguard.system_lookup,
        strict_redirects: bool = False,
    ) -> None:
        self._config = config
        self._timeout = timeout
        self._resolver = resolver
        self._strict_redirects = strict_redirects

    async def fetch(self, href: str, *, if_none_match: str | None = None) -> Upstream:
        url = ada_url.URL(href)
        redirects_left = self._config.maximum_redirects
        while True:
            async with hop_deadline(self._timeout), self._get(url, if_none_match) as response:
                target = _redirect_target(response, url.href)
                if target is None:
                    return await read_upstream(
                        response,
                        conditional=if_none_match is not None,
                        limit=self._config.maximum_response_body,
                        message=errors.UPSTREAM_INVALID,
                    )
            if redirects_left == 0:
                raise ImageError(508, errors.UPSTREAM_INVALID, category="upstream")
            config = self._config
            if self._strict_redirects and not has_remote_match(
                config.domains, config.remote_patterns, target
            ):
                # As for a private-address hop: the upstream sent us there, the request was fine.
                raise ImageError(400, errors.URL_NOT_ALLOWED, category="upstream")
            redirects_left -= 1
            url = target

    @asynccontextmanager
    async def _get(
        self, url: ada_url.URL, if_none_match: str | None
    ) -> AsyncIterator[httpx.Response]:
        """One hop: resolve and check once, then connect to a checked address only."""
        if url.protocol not in ("http:", "https:"):
            # A redirect to ftp:, gopher:, file:, data:...: the upstream's fault (Next: 500).
            raise ImageError(502, errors.UPSTREAM_INVALID, category="upstream")
        https = url.protocol == "https:"
        hostname = url.hostname.removeprefix("[").removesuffix("]")
        if self._config.dangerously_allow_local_ip:
            addresses = await netguard.resolve(hostname, resolver=self._resolver)
        else:
            addresses = await netguard.resolve_public(hostname, resolver=self._resolver)
        port = int(url.port) if url.port else (443 if https else 80)
        target = (url.pathname + url.search).encode()
        candidates = [
            _url(scheme=url.protocol[:-1], host=address, port=port, raw_path=target)
            for address in addresses
        ]
        headers = {
            "host": url.host,
            "accept": "*/*",
            "accept-language": "*",
            "sec-fetch-mode": "cors",
            "user-agent": "node",
            "accept-encoding": "br, gzip, deflate" if https else "gzip, deflate",
        }
        if if_none_match is not None:
            headers["if-none-match"] = if_none_match
        sni_hostname = hostname if https else None
        async with open_get(candidates, headers, sni_hostname=sni_hostname) as response:
            yield response


def _redirect_target(response: httpx.Response, base: str) -> ada_url.URL | None:
    """Where a redirect points, or None when Next would treat the response as final."""
    location = first_header(response, "location")
    if response.status_code not in _REDIRECT_STATUSES or location is None:
        return None
    if not ada_url.URL.can_parse(location, base):
        return None
    return ada_url.URL(location, base)


def _url(*, scheme: str, host: str, port: int, raw_path: bytes) -> httpx.URL:
    import httpx  # on the first fetch, not at import (see handler.sources.http_fetch)

    return httpx.URL(scheme=scheme, host=host, port=port, raw_path=raw_path)
