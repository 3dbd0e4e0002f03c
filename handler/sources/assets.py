"""How a relative URL maps to a stored asset, shared by the public-dir and S3 assets sources.

Next's static server answers public files with ``max-age=0`` and its hashed build output under
``/_next/static`` as immutable; our sources report the same upstream headers.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import ada_url

PUBLIC_CACHE_CONTROL = "public, max-age=0"
STATIC_CACHE_CONTROL = "public, max-age=31536000, immutable"


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
    return STATIC_CACHE_CONTROL if segments[:2] == ["_next", "static"] else PUBLIC_CACHE_CONTROL
