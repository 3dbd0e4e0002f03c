"""Next's allow-lists: ``hasRemoteMatch`` and ``hasLocalMatch`` (match-*-pattern.ts).

Both run on WHATWG-parsed URLs (ada), so hosts are lower-cased and punycoded, IPv4 shorthand is
normalised and ``..`` segments are resolved before any glob sees them. Patterns are matched in time
linear in the URL (``handler.contract.linear_regex``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import ada_url

from handler.contract.config import LocalPattern, RemotePattern

MAX_HOSTNAME_LENGTH = 253  # DNS's limit: no longer name resolves, so none is worth matching
_ENCODED_SEPARATOR = re.compile(r"%(?:2f|5c)", re.IGNORECASE)


def has_remote_match(
    domains: Sequence[str], remote_patterns: Sequence[RemotePattern], url: ada_url.URL
) -> bool:
    """``domains`` is an exact host match that then allows any protocol, port, path and query.

    A hostname longer than DNS allows matches nothing, before any pattern runs.
    """
    if len(url.hostname) > MAX_HOSTNAME_LENGTH:
        return False
    return url.hostname in domains or any(_matches_remote(p, url) for p in remote_patterns)


def _matches_remote(pattern: RemotePattern, url: ada_url.URL) -> bool:
    if pattern.protocol is not None and pattern.protocol != url.protocol.removesuffix(":"):
        return False
    if pattern.port is not None and pattern.port != url.port:
        return False
    if not pattern.hostname.search(url.hostname):
        return False
    if pattern.search is not None and pattern.search != url.search:
        return False
    return pattern.pathname.search(url.pathname)


def has_local_match(local_patterns: Sequence[LocalPattern] | None, url: str) -> bool:
    """``None`` (Next 15's default) allows all; raises ``ValueError`` if ``url`` won't parse.

    Unlike Next, a path with an encoded ``/`` or ``\\`` matches no pattern: the pattern would see
    one segment (``/only/*.png`` matches ``/only/a%2Fb.png``) where the file lookup, which
    decodes, would see two.
    """
    if local_patterns is None:
        return True
    parsed = ada_url.URL(url, "http://n")
    if _ENCODED_SEPARATOR.search(parsed.pathname):
        return False
    return any(
        (p.search is None or p.search == parsed.search) and p.pathname.search(parsed.pathname)
        for p in local_patterns
    )
