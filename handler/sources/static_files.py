"""How a relative URL maps to a stored asset, shared by the public-dir and S3 assets sources.

Next's static server answers public files with ``max-age=0`` and its hashed build output under
``/_next/static`` as immutable for a year (``packages/next/src/server/lib/router-server.ts``, which
calls ``serveStatic``); our sources report the same upstream headers.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import ada_url

PUBLIC_FILE_CACHE_CONTROL = "public, max-age=0"  # a file of ``public/``
STATIC_FILE_CACHE_CONTROL = "public, max-age=31536000, immutable"  # one under ``/_next/static``


def asset_segments(href: str) -> list[str] | None:
    """The decoded path segments of ``href``, or None if any could escape or confuse the root.

    Segments are split before they are decoded, and one whose decoded text holds a separator is
    refused: the lookup never sees more segments than the allow-list did (``a%2Fb`` is one).
    """
    segments = []
    for raw in ada_url.URL(href, "http://n").pathname.split("/"):
        if not raw:
            continue
        try:
            segment = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return None
        if segment in (".", "..") or any(char in segment for char in "/\\\x00"):
            return None
        segments.append(segment)
    return segments or None


def default_cache_control(segments: list[str]) -> str:
    if segments[:2] == ["_next", "static"]:
        return STATIC_FILE_CACHE_CONTROL
    return PUBLIC_FILE_CACHE_CONTROL
